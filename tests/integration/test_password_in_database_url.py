"""A password written in DATABASE_URL (as compose.yaml does) still authenticates every
engine, now that the settings take it out of the URL and hand it to the driver per
connection. Against the private SCRAM-only, TLS-only cluster of test_database_password:
the machine's own Postgres accepts any password, so it could not tell.
"""

# ruff: noqa: F811 (the private cluster's fixtures, imported, are named as test parameters)
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import text

from api import queries
from api.database import Database, create_api_engine
from models.engine import create_db_engine
from models.settings import DatabaseSettings
from tests.integration.test_database_password import (  # noqa: F401 (fixtures, skip mark)
    App,
    Cluster,
    app,
    cluster,
    pytestmark,
)
from tests.services import ROOT


def url_with_password(app: App, password: str) -> str:
    user = app.url.split("//")[1].split("@")[0]
    return app.url.replace(f"//{user}@", f"//{user}:{quote(password, safe='')}@", 1)


def test_every_engine_authenticates_with_the_password_from_the_url(cluster: Cluster, app: App):
    """psycopg2 (workers), asyncpg (the API) and alembic (migrations), SCRAM over TLS."""
    url = url_with_password(app, app.password)
    database = DatabaseSettings.from_env({"DATABASE_URL": url})
    assert app.password not in database.url

    engine = create_db_engine(database, application_name="test", pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()

    async def api_ping() -> object:
        api_engine = create_api_engine(database, application_name="test")
        try:
            return await Database(api_engine).fetch_one(queries.DATABASE_PING)
        finally:
            await api_engine.dispose()

    assert asyncio.run(api_ping()) is not None

    done = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert app.password not in done.stdout + done.stderr


def test_db_password_wins_over_the_urls(cluster: Cluster, app: App):
    """DB_PASSWORD overrides a (stale) password written in the URL."""
    database = DatabaseSettings.from_env(
        {"DATABASE_URL": url_with_password(app, "not-it"), "DB_PASSWORD": app.password}
    )
    engine = create_db_engine(database, application_name="test", pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()

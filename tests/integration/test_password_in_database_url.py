"""A password written in DATABASE_URL (as compose.yaml does) still authenticates every
engine, now that the settings take it out of the URL and hand it to the driver per
connection. Against the private SCRAM-only, TLS-only cluster of test_database_password:
the machine's own Postgres accepts any password, so it could not tell.
"""

# ruff: noqa: F811 (the private cluster's fixtures, imported, are named as test parameters)
from __future__ import annotations

import asyncio
from urllib.parse import quote

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
    worker_select,
)
from tests.processes import BIN, run


def url_with_password(app: App, password: str) -> str:
    user = app.url.split("//")[1].split("@")[0]
    return app.url.replace(f"//{user}@", f"//{user}:{quote(password, safe='')}@", 1)


def worker_connects(database: DatabaseSettings) -> bool:
    """Whether the workers' engine (psycopg2) gets a connection that answers a query."""
    engine = create_db_engine(database, application_name="test", pool_size=1)
    try:
        return worker_select(engine) == 1
    finally:
        engine.dispose()


def test_every_engine_authenticates_with_the_password_from_the_url(cluster: Cluster, app: App):
    """psycopg2 (workers), asyncpg (the API) and alembic (migrations), SCRAM over TLS."""
    url = url_with_password(app, app.password)
    database = DatabaseSettings.from_env({"DATABASE_URL": url})
    assert app.password not in database.url
    assert worker_connects(database)

    async def api_ping() -> object:
        api_engine = create_api_engine(database, application_name="test")
        try:
            return await Database(api_engine).fetch_one(queries.DATABASE_PING)
        finally:
            await api_engine.dispose()

    assert asyncio.run(api_ping()) is not None

    done = run(
        [str(BIN / "alembic"), "upgrade", "head"],
        {"DATABASE_URL": url, "LOG_FORMAT": "json"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert app.password not in done.stdout + done.stderr


def test_db_password_wins_over_the_urls(cluster: Cluster, app: App):
    """DB_PASSWORD overrides a (stale) password written in the URL."""
    database = DatabaseSettings.from_env(
        {"DATABASE_URL": url_with_password(app, "not-it"), "DB_PASSWORD": app.password}
    )
    assert worker_connects(database)

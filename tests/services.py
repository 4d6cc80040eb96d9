"""Reaching the real services the tests run against (Postgres, Redis), failing fast if down."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg2
from sqlalchemy import create_engine, pool

from models import schema
from models.settings import normalise_database_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: An existing database to connect to for CREATE/DROP DATABASE.
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_port(url: str, what: str) -> None:
    """Raise a one-line, actionable error if nothing listens at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError as exc:
        raise RuntimeError(
            f"{what} is unreachable at {parts.hostname}:{parts.port} ({exc}); start it "
            "(see .ci/run) or point {var} elsewhere".replace(
                "{var}", "TEST_POSTGRES_URL" if what == "Postgres" else "TEST_REDIS_URL"
            )
        ) from None


def _admin_connection():  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(ADMIN_URL, connect_timeout=3)
    conn.autocommit = True
    return conn


def database_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return parts._replace(path=f"/{name}").geturl()


@contextmanager
def scratch_database(prefix: str = "taskoverflow_test") -> Iterator[str]:
    """A new, empty database for the duration of the block; dropped afterwards."""
    require_port(ADMIN_URL, "Postgres")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield database_url(name)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def migrate(url: str, revision: str = "head") -> None:
    """``alembic upgrade`` on ``url``, the way the deployment does it."""
    engine = create_engine(normalise_database_url(url), poolclass=pool.NullPool)
    schema.upgrade(engine, revision)
    engine.dispose()

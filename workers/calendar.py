"""The calendar job's work: read the todos and render them as an iCalendar.

Its progress (``workers.runner.Progress``) goes through two stages:

- ``reading``: querying the todos; for a large calendar, counting them (``total``) and
  opening the cursor that streams them;
- ``rendering``: writing the events; ``done`` of ``total`` dated todos are on the calendar.

A small calendar (one page of rows) is done long before its first progress write is due, so
it never makes one; a large one is told at every batch of FETCH_BATCH rows, which is also
where it stops when a cancel is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from itertools import chain
from typing import Any, cast

from sqlalchemy import Connection, Select, String, func, select
from sqlalchemy.dialects.postgresql.psycopg2 import dialect as psycopg2_dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from models import Todo
from models.results import StoredResult, gzip_lines
from workers.errors import PermanentJobError
from workers.ical import CalendarTodo, render_lines
from workers.runner import Progress

#: Rows fetched per round trip from the server-side cursor: memory stays bounded by this, and
#: fewer would cost more round trips on large calendars (docs/BENCHMARKS.md, P3).
FETCH_BATCH = 5000

#: The stages of a calendar job's progress (see above).
READING, RENDERING = "reading", "rendering"


class ical_utc(FunctionElement[str]):
    """A timestamp column formatted by the database as an RFC 5545 UTC DATE-TIME.

    Parsing two timestamps per row into datetimes (psycopg2) and formatting them again
    (Python) was a large share of a big calendar's time; the database's own formatting costs
    it almost nothing (docs/BENCHMARKS.md, P3).
    """

    type = String()
    inherit_cache = True


@compiles(ical_utc, "postgresql")
def _ical_utc_postgresql(element: ical_utc, compiler: Any, **kw: Any) -> str:
    return f"""to_char({compiler.process(element.clauses, **kw)}, 'YYYYMMDD"T"HH24MISS"Z"')"""


@compiles(ical_utc, "sqlite")
def _ical_utc_sqlite(element: ical_utc, compiler: Any, **kw: Any) -> str:
    return f"strftime('%Y%m%dT%H%M%SZ', {compiler.process(element.clauses, **kw)})"


#: Every todo with a deadline, soonest first (Core rows: no ORM objects to build).
_DATED = (
    select(
        Todo.id,
        Todo.title,
        Todo.description,
        ical_utc(Todo.deadline_at),
        ical_utc(Todo.updated_at),
    )
    .where(Todo.deadline_at.is_not(None))
    .order_by(Todo.deadline_at, Todo.id)
)


_FIRST_PAGE = _DATED.limit(FETCH_BATCH + 1)

#: How many todos a large calendar holds (its progress's ``total``); an index-only scan.
_COUNT = select(func.count()).select_from(Todo).where(Todo.deadline_at.is_not(None))


def _psycopg2_sql(statement: Select[*tuple[Any, ...]]) -> str:
    # Compiled once, at import: compiling per job was a visible share of the worker's CPU on
    # small calendars (docs/BENCHMARKS.md, P1).
    return str(
        statement.compile(dialect=psycopg2_dialect(), compile_kwargs={"literal_binds": True})
    )


_FIRST_PAGE_SQL, _DATED_SQL = _psycopg2_sql(_FIRST_PAGE), _psycopg2_sql(_DATED)
_COUNT_SQL = _psycopg2_sql(_COUNT)


def _within(events: int, max_events: int | None) -> None:
    """The API refuses a submission over CALENDAR_MAX_EVENTS; todos added since then can
    still take a job over it, which then fails for good, saying why (not worth a retry)."""
    if max_events is not None and events > max_events:
        raise PermanentJobError(
            f"calendar too large: {events} events, more than {max_events} "
            "(CALENDAR_MAX_EVENTS); delete dated todos or clear their deadlines, then retry"
        )


@contextmanager
def dated_todos(
    conn: Connection, progress: Progress, max_events: int | None = None
) -> Iterator[Iterable[CalendarTodo]]:
    """The dated todos of one snapshot, for the block; ``conn`` is in autocommit mode.

    Most calendars are small: one plain query (one round trip) answers them. Only when that
    first page is full are the todos streamed instead, through a server-side cursor, which
    needs a transaction (a few round trips, nothing for a 100,000-todo calendar) and keeps
    the worker's memory bounded by FETCH_BATCH rows. The first page is then read again: a
    cursor's single statement is what gives one consistent snapshot.

    ``progress`` is told the stage, the total and, at each batch, how many todos the
    renderer has taken; it raises ``JobCancelled`` out of the block when the job is to stop.

    On psycopg2 the rows come straight from its cursors, as tuples: SQLAlchemy's result layer
    is measurable on large reads (docs/BENCHMARKS.md, P3), and rows need no processing here
    (the database already formatted the timestamps). Other databases go through SQLAlchemy.
    """
    progress.update(READING)
    direct = conn.dialect.driver == "psycopg2"
    if direct:
        with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(_FIRST_PAGE_SQL)
            first: Sequence[Any] = cursor.fetchall()
    else:
        first = conn.execute(_FIRST_PAGE).all()
        conn.commit()  # autocommit: ends SQLAlchemy's own bookkeeping only
    if len(first) <= FETCH_BATCH:
        _within(len(first), max_events)
        progress.update(RENDERING, done=0, total=len(first))
        # Rows unpack like CalendarTodo (same columns, same order): no per-row wrapping.
        yield cast("list[CalendarTodo]", first)
        return
    del first
    # A transaction for the count and the cursor. On Postgres REPEATABLE READ, so both see
    # one snapshot and ``done`` ends exactly at ``total``; it costs a read-only transaction
    # nothing. SQLite's driver opens no transaction for reads: its total is the count at
    # the time (the single-process run, where nothing else writes much).
    postgres = conn.dialect.name == "postgresql"
    level = "REPEATABLE READ" if postgres else conn.dialect.default_isolation_level
    conn.execution_options(isolation_level=level)
    try:
        with conn.begin():
            if direct:
                dbapi = conn.connection.dbapi_connection
                with dbapi.cursor() as counter:  # type: ignore[union-attr]
                    counter.execute(_COUNT_SQL)
                    total = counter.fetchone()[0]
                _within(total, max_events)
                progress.update(READING, total=total)
                with dbapi.cursor(name="dated_todos") as cursor:  # type: ignore[union-attr]
                    cursor.execute(_DATED_SQL)
                    batches = iter(partial(cursor.fetchmany, FETCH_BATCH), [])
                    yield chain.from_iterable(_told(batches, progress))
            else:
                total = conn.execute(_COUNT).scalar_one()
                _within(total, max_events)
                progress.update(READING, total=total)
                # Closed even when the rendering stops half-way (a cancel): an open SQLite
                # statement keeps its read snapshot, and the job's next write would fail.
                with conn.execute(_DATED.execution_options(yield_per=FETCH_BATCH)) as rows:
                    yield chain.from_iterable(_told(rows.partitions(), progress))
    finally:
        conn.execution_options(isolation_level="AUTOCOMMIT")


def _told(batches: Iterable[Sequence[Any]], progress: Progress) -> Iterator[Sequence[CalendarTodo]]:
    """The batches, with ``progress`` told before each how many todos went before it: one
    clock read per FETCH_BATCH rows, never per row."""
    done = 0
    for batch in batches:
        progress.update(RENDERING, done=done)
        yield cast("Sequence[CalendarTodo]", batch)
        done += len(batch)
    progress.update(RENDERING, done=done)


def calendar_result(
    conn: Connection, progress: Progress, *, uid_domain: str, max_events: int | None = None
) -> StoredResult:
    """The work of an ``ical`` job: every dated todo as one iCalendar (RFC 5545) text, if
    there are at most ``max_events``, compressed as it is rendered: the worker never holds
    the text whole, only its gzip (models.results)."""
    with dated_todos(conn, progress, max_events) as todos:
        return gzip_lines(render_lines(todos, uid_domain=uid_domain))

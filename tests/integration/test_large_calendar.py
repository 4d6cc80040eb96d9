"""A 100,000-todo calendar on real Postgres: complete, parseable, read with bounded memory.

No timings here (they live in ``make bench``, P4): these tests fail only if the calendar is
wrong or the todos stop being streamed.
"""

from __future__ import annotations

from functools import partial

import icalendar
from sqlalchemy import Engine

from tests.integration.jobs import insert_job, insert_todos, job_row
from workers.calendar import FETCH_BATCH, calendar_text, dated_todos
from workers.runner import run_job

TODOS = 100_000


def test_a_100k_todo_calendar_is_complete_and_parses(engine: Engine):
    """Every dated todo is one event, in deadline order, and icalendar reads it all back."""
    insert_todos(engine, TODOS)
    insert_todos(engine, 7, deadline=None)  # undated: never on the calendar
    job_id = insert_job(engine)
    assert (
        run_job(engine, job_id, partial(calendar_text, uid_domain="taskoverflow.test")) == "success"
    )
    row = job_row(engine, job_id)
    assert (row.status, row.attempts, row.error) == ("SUCCESS", 1, None)
    text: str = row.result

    lines = text.split("\r\n")
    assert lines[-1] == "", "the calendar ends with CRLF"
    assert max(len(line.encode()) for line in lines) <= 75
    assert "\n" not in text.replace("\r\n", "")

    calendar = icalendar.Calendar.from_ical(text)
    events = calendar.walk("VEVENT")
    assert len(events) == TODOS
    uids = [str(event["UID"]) for event in events]
    assert set(uids) == {f"{i}@taskoverflow.test" for i in range(1, TODOS + 1)}
    starts = [event.decoded("DTSTART") for event in events]
    assert starts == sorted(starts)
    assert str(events[0]["SUMMARY"]) == "Todo 1"
    assert str(events[-1]["DESCRIPTION"]) == f"about, todo; {TODOS}"  # escaped and back


def test_the_todos_are_streamed_not_loaded(engine: Engine):
    """Reading 100,000 todos never holds more than FETCH_BATCH rows in the worker.

    The rows come from a psycopg2 cursor; its ``rowcount`` is how many rows the client holds:
    with a server-side cursor, the last batch fetched; with a client-side one, the whole
    result, which libpq keeps outside Python's allocator (tracemalloc cannot see it).
    """
    insert_todos(engine, TODOS)
    autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with autocommit as conn, dated_todos(conn) as todos:
        count, held = 0, 0
        for count, _ in enumerate(todos, start=1):
            if count % 1000 == 1:
                held = max(held, todos.rowcount)  # type: ignore[attr-defined]
    assert count == TODOS
    assert 0 < held <= FETCH_BATCH, f"{held} rows held at once"

"""A 100,000-todo calendar on real Postgres: complete, parseable, read with bounded memory.

No timings here (they live in ``make bench``, P4): these tests fail only if the calendar is
wrong or the todos stop being streamed.
"""

from __future__ import annotations

import tracemalloc

import icalendar
from sqlalchemy import Engine

from tests.integration.jobs import insert_job, insert_todos, job_row
from workers.calendar import calendar_work, dated_todos
from workers.lifecycle import run_job

TODOS = 100_000


def test_a_100k_todo_calendar_is_complete_and_parses(engine: Engine):
    """Every dated todo is one event, in deadline order, and icalendar reads it all back."""
    insert_todos(engine, TODOS)
    insert_todos(engine, 7, deadline=None)  # undated: never on the calendar
    job_id = insert_job(engine)
    assert run_job(engine, job_id, calendar_work("taskoverflow.test")) == "success"
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
    """Reading 100,000 todos allocates about one batch at a time (a list of every row would
    be tens of MB): the worker's memory does not grow with the todo table."""
    insert_todos(engine, TODOS)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        tracemalloc.start()
        try:
            with dated_todos(conn) as todos:
                count = sum(1 for _ in todos)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == TODOS
    # A batch (FETCH_BATCH rows) is a few MB; every row at once is over 30 MB.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while reading"

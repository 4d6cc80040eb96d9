"""A 100,000-todo calendar on real Postgres: complete, parseable, read with bounded memory.

No timings here (they live in ``make bench``, P4): these tests fail only if the calendar is
wrong or the todos stop being streamed.
"""

from __future__ import annotations

import tracemalloc
from datetime import timedelta
from functools import partial
from itertools import pairwise

import icalendar
from sqlalchemy import Engine

from tests.integration.jobs import insert_job, insert_todos, job_row
from workers.calendar import FETCH_BATCH, calendar_result, dated_todos
from workers.runner import Progress, run_job

TODOS = 100_000


def test_a_100k_todo_calendar_is_complete_and_parses(engine: Engine):
    """Every dated todo is one event, in deadline order, and icalendar reads it all back."""
    insert_todos(engine, TODOS)
    insert_todos(engine, 7, deadline=None)  # undated: never on the calendar
    job_id = insert_job(engine)
    render = partial(calendar_result, uid_domain="taskoverflow.test")
    assert run_job(engine, job_id, render, keep=timedelta(days=1)) == "success"
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

    The rows come through a server-side cursor (Postgres lists it in ``pg_cursors`` while
    they are read), a batch of at most FETCH_BATCH rows at a time: the progress, told at
    every batch with every write due, sees ``done`` grow by FETCH_BATCH at most.
    """
    insert_todos(engine, TODOS)
    told: list[tuple[str, int, int | None]] = []

    def report(stage: str, done: int, total: int | None) -> bool:
        told.append((stage, done, total))
        return True

    autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with autocommit as conn, dated_todos(conn, Progress(report, interval=0)) as todos:
        count, cursors = 0, 0
        for count, _ in enumerate(todos, start=1):
            if count == FETCH_BATCH * 3:  # mid-stream: the job's own connection
                with conn.connection.dbapi_connection.cursor() as probe:  # type: ignore[union-attr]
                    probe.execute("SELECT count(*) FROM pg_cursors WHERE name = 'dated_todos'")
                    (cursors,) = probe.fetchone()
    assert count == TODOS
    assert cursors == 1, "no server-side cursor while the todos were read"
    rendering = [done for stage, done, total in told if stage == "rendering"]
    assert {total for stage, _, total in told if stage == "rendering"} == {TODOS}
    assert rendering[0] == 0
    assert rendering[-1] == TODOS
    steps = [later - earlier for earlier, later in pairwise(rendering)]
    assert max(steps) <= FETCH_BATCH, f"{max(steps)} rows handed over at once"


def test_the_calendar_is_compressed_as_it_is_rendered(engine: Engine):
    """The worker never holds the calendar's text whole: rendering 100,000 events (~16 MB of
    text) peaks at a few MiB of Python allocations (a batch of rows and of text, and the
    compressed result, twice while it is joined), when the text alone is 2.5 times that."""
    insert_todos(engine, TODOS)
    autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with autocommit as conn:
        tracemalloc.start()
        try:
            result = calendar_result(
                conn, Progress(lambda *_: True), uid_domain="taskoverflow.test"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    bound = 6 * 2**20
    assert result.size > 2.5 * bound
    assert result.text().count("BEGIN:VEVENT") == TODOS
    assert peak < bound + len(result.data), (
        f"{peak / 2**20:.1f} MiB held to write {result.size >> 20} MiB"
    )

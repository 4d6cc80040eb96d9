"""A running job's progress and its cooperative cancel, on real Postgres (and the statements
on SQLite, which the zero-setup run uses)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from dramatiq.middleware import Middleware
from sqlalchemy import Connection, Engine, insert, select, text

from models import Job, JobKind, Todo, lifecycle, schema
from models.clock import utcnow
from models.engine import create_db_engine, worker_pool_size
from models.queue import job_message
from models.results import StoredResult, gzip_text
from models.settings import DatabaseSettings, Settings
from tests.integration.jobs import SLOW_CALENDAR_TODOS, insert_job, insert_todos, job_row
from tests.waiting import wait_for, wait_for_job
from tests.workers import redis_worker
from workers import runner
from workers.calendar import FETCH_BATCH, calendar_result
from workers.runner import PROGRESS_INTERVAL_S, Progress, mark_failed, run_job

render = partial(calendar_result, uid_domain="taskoverflow.test")
KEEP = timedelta(days=1)
CANCELLED = {"CANCELLED"}


def cancel(engine: Engine, job_id: uuid.UUID) -> None:
    """What ``DELETE``/``POST .../cancel`` does: the API's CANCEL statement, committed."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(lifecycle.CANCEL, {"job_id": job_id, "now": now, "expires_at": now + KEEP})


class JobNotifications:
    """The jobs' NOTIFY channel (migration 0005's trigger): one notification per change of
    a job's status, stage, progress or cancel request, i.e. per write that matters."""

    def __init__(self, engine: Engine) -> None:
        self._conn = engine.raw_connection()
        driver: Any = self._conn.driver_connection  # psycopg2's connection
        driver.autocommit = True
        with driver.cursor() as cursor:
            cursor.execute("LISTEN taskoverflow_jobs")

    def of(self, job_id: uuid.UUID) -> int:
        driver: Any = self._conn.driver_connection
        driver.poll()
        return sum(1 for note in driver.notifies if note.payload == str(job_id))

    def close(self) -> None:
        self._conn.invalidate()  # never back to the pool: it listens, in autocommit


@pytest.fixture
def notifications(engine: Engine) -> Iterator[JobNotifications]:
    listener = JobNotifications(engine)
    yield listener
    listener.close()


def test_a_small_calendar_writes_no_progress(engine: Engine, notifications: JobNotifications):
    """A calendar of one page finishes before a progress write is due: its job makes its
    two writes (claim, result) and not one more (the P1 benchmark's round trips)."""
    insert_todos(engine, FETCH_BATCH)
    job_id = insert_job(engine)
    assert run_job(engine, job_id, render, keep=KEEP) == "success"
    row = job_row(engine, job_id)
    assert (row.stage, row.progress_done, row.progress_total) == (None, None, None)
    assert notifications.of(job_id) == 2


def test_a_large_calendar_reports_its_progress_at_a_bounded_rate(
    engine: Engine, notifications: JobNotifications
):
    """A calendar that takes seconds tells its stage and done/total while it runs, committed
    at once (another connection reads it), at most one write per PROGRESS_INTERVAL_S."""
    todos = 300_000
    insert_todos(engine, todos)
    job_id = insert_job(engine)
    outcome: list[str] = []
    started = time.monotonic()
    worker = threading.Thread(
        target=lambda: outcome.append(run_job(engine, job_id, render, keep=KEEP))
    )
    worker.start()
    seen = wait_for(
        lambda: job_row(engine, job_id),
        lambda row: row.progress_done,
        timeout=30,
        what="a progress write with todos done",
    )
    worker.join(60)
    elapsed = time.monotonic() - started
    assert outcome == ["success"]
    assert (seen.status, seen.stage, seen.progress_total) == ("STARTED", "rendering", todos)
    assert 0 < seen.progress_done < todos
    assert seen.progress_done % FETCH_BATCH == 0
    reports = notifications.of(job_id) - 2  # claim and result
    assert 1 <= reports <= elapsed / PROGRESS_INTERVAL_S + 1, (reports, elapsed)
    finished = job_row(engine, job_id)
    assert (finished.status, finished.stage) == ("SUCCESS", None)
    assert finished.result.count("BEGIN:VEVENT") == todos


class ProcessedMessages(Middleware):
    """Which worker thread finished each message, and with what exception."""

    def __init__(self) -> None:
        self.done: list[tuple[str, int, BaseException | None]] = []

    def after_process_message(self, broker, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
        self.done.append((message.args[0], threading.get_ident(), exception))


def test_a_running_600k_todo_job_is_cancelled_within_two_seconds(
    engine: Engine, settings: Settings
):
    """The acceptance test of cooperative cancel, through a real worker on Redis: the job
    ends CANCELLED without a result within 2 s of the API's CANCEL, its message is done with
    (no exception, no retry), and the same worker thread goes on to the next job."""
    insert_todos(engine, SLOW_CALENDAR_TODOS)
    slow, quick = insert_job(engine), insert_job(engine)
    processed = ProcessedMessages()
    queue = settings.broker.queue_name
    with redis_worker(settings, threads=1) as broker:
        broker.add_middleware(processed)
        broker.enqueue(job_message(queue, JobKind.ICAL, slow))
        wait_for(
            lambda: job_row(engine, slow),
            lambda row: row.progress_done,
            timeout=30,
            what="the slow job to be rendering",
        )
        cancel(engine, slow)
        asked = time.monotonic()
        row = wait_for_job(engine, slow, CANCELLED, timeout=10)
        took = time.monotonic() - asked
        with engine.begin() as conn:  # the next job: a small calendar
            conn.execute(text("DELETE FROM todos WHERE id > 3"))
        broker.enqueue(job_message(queue, JobKind.ICAL, quick))
        assert wait_for_job(engine, quick, timeout=30).status == "SUCCESS"
        wait_for(lambda: len(processed.done), lambda n: n >= 2, timeout=10, what="both acks")
    assert took < 2, f"cancelled {took:.2f} s after the request"
    assert (row.result, row.error) == (None, lifecycle.CANCELLED_REASON)
    assert row.progress_total == SLOW_CALENDAR_TODOS
    assert row.progress_done < SLOW_CALENDAR_TODOS
    assert row.expires_at is not None
    assert row.attempts == 1
    (slow_thread, slow_error), (quick_thread, quick_error) = (
        (thread, error) for _, thread, error in processed.done
    )
    assert [job for job, _, _ in processed.done] == [str(slow), str(quick)]
    assert (slow_error, quick_error) == (None, None)
    assert slow_thread == quick_thread


def test_a_cancel_asked_before_the_result_is_recorded_wins(engine: Engine):
    """The work finished before its next progress write could see the request: the client
    was already told the job is stopping, so it ends CANCELLED and its result is dropped."""
    insert_todos(engine, 3)
    job_id = insert_job(engine)

    def cancelled_meanwhile(conn: Connection, progress: Progress) -> StoredResult:
        result = render(conn, progress)
        cancel(engine, job_id)
        return result

    assert run_job(engine, job_id, cancelled_meanwhile, keep=KEEP) == "cancelled"
    row = job_row(engine, job_id)
    assert (row.status, row.result, row.error) == ("CANCELLED", None, lifecycle.CANCELLED_REASON)
    assert row.finished_at is not None
    assert row.expires_at == row.finished_at + KEEP


def test_a_job_cancelled_while_an_earlier_attempt_ran_stops_at_its_claim(engine: Engine):
    """Its worker died after the cancel request; the redelivered message stops it at once,
    without running the work."""
    job_id = insert_job(engine, status="STARTED", attempts=1)
    cancel(engine, job_id)
    assert job_row(engine, job_id).status == "STARTED"  # running: only asked to stop

    def never(conn: Connection, progress: Progress) -> StoredResult:
        raise AssertionError("the work of a cancelled job ran")

    assert run_job(engine, job_id, never, keep=KEEP) == "cancelled"
    row = job_row(engine, job_id)
    assert (row.status, row.attempts, row.result) == ("CANCELLED", 2, None)


def test_a_queued_job_cancelled_is_dropped_by_its_worker(engine: Engine):
    """PENDING: CANCELLED by the API at once; the message, when it comes, does nothing."""
    job_id = insert_job(engine)
    cancel(engine, job_id)
    assert job_row(engine, job_id).status == "CANCELLED"
    assert run_job(engine, job_id, render, keep=KEEP) == "skipped-finished"
    assert job_row(engine, job_id).attempts == 0


def test_a_job_finished_elsewhere_stops_at_its_next_progress_write(engine: Engine):
    """Nobody asked to cancel, but the job is no longer this attempt's (abandoned by the
    reconciler, say): the work stops, and the job stays as it was finished."""
    job_id = insert_job(engine)

    def outlived(conn: Connection, progress: Progress) -> StoredResult:
        assert mark_failed(engine, job_id, "abandoned after 3 attempts", keep=KEEP)
        progress.write()
        raise AssertionError("the work went on")

    assert run_job(engine, job_id, outlived, keep=KEEP) == "skipped-finished"
    row = job_row(engine, job_id)
    assert (row.status, row.error) == ("FAILURE", "abandoned after 3 attempts")


def test_progress_writes_only_when_due():
    """Updates cost nothing until the interval has passed; then one write, then none again
    for an interval. A write that says stop raises JobCancelled."""
    written: list[tuple[str, int, int | None]] = []
    answer = [True]

    def report(stage: str, done: int, total: int | None) -> bool:
        written.append((stage, done, total))
        return answer[0]

    progress = Progress(report, interval=0.2)
    for done in range(1000):
        progress.update("rendering", done=done, total=1000)
    assert written == []
    time.sleep(0.25)
    progress.update(done=1000)
    progress.update(done=1001)
    assert written == [("rendering", 1000, 1000)]
    answer[0] = False
    time.sleep(0.25)
    with pytest.raises(runner.JobCancelled):
        progress.update(done=1002)


# --- The same statements on SQLite (the zero-setup run) -----------------------------------


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite file, configured as the zero-setup run's engine is."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    engine = create_db_engine(
        DatabaseSettings.from_env({"DATABASE_URL": url}),
        application_name="tests",
        pool_size=worker_pool_size(1),
        pre_ping=False,
    )
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def sqlite_job(engine: Engine) -> uuid.UUID:
    job_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            lifecycle.SUBMIT, {"id": job_id, "kind": "ical", "now": utcnow(), "traceparent": None}
        )
    return job_id


def sqlite_row(engine: Engine, job_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Job).where(Job.id == job_id)).one()


def sqlite_todos(engine: Engine, count: int) -> None:
    now = utcnow()
    rows = [
        {
            "title": f"Todo {i}",
            "description": None,
            "completed": False,
            "deadline_at": datetime(2030, 1, 1) + timedelta(minutes=i),
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Todo), rows)


def test_the_worker_transitions_work_on_sqlite(sqlite_engine: Engine):
    """claim, report, a cancel while running, report saying stop, stop; succeed refused."""
    job_id = sqlite_job(sqlite_engine)
    with sqlite_engine.connect() as conn:
        claimed = lifecycle.claim(conn, job_id)
        assert claimed is not None
        assert (claimed.kind, claimed.attempts, claimed.cancel_requested) == ("ical", 1, False)
        assert claimed.created_at <= claimed.started_at
        assert lifecycle.report(conn, job_id, "rendering", 10, 20) is True
        conn.commit()
    cancel(sqlite_engine, job_id)
    with sqlite_engine.connect() as conn:
        assert lifecycle.report(conn, job_id, "rendering", 15, 20) is False
        assert lifecycle.succeed(conn, job_id, gzip_text("text"), KEEP) is False
        assert lifecycle.stop(conn, job_id, KEEP) is True
        assert lifecycle.report(conn, job_id, "rendering", 20, 20) is False
        conn.commit()
    row = sqlite_row(sqlite_engine, job_id)
    assert (row.status, row.result, row.progress_done, row.progress_total) == (
        "CANCELLED",
        None,
        15,
        20,
    )
    assert row.expires_at == row.finished_at + KEEP
    with sqlite_engine.connect() as conn:
        assert lifecycle.claim(conn, job_id) is None


def test_a_streamed_calendar_reports_and_is_cancelled_on_sqlite(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """A calendar past one page streams on SQLite too, with its progress written on another
    connection while the read is open; and a cancel stops it there."""
    monkeypatch.setattr(runner, "PROGRESS_INTERVAL_S", 0)  # every update writes
    todos = FETCH_BATCH * 2 + 7
    sqlite_todos(sqlite_engine, todos)
    done = sqlite_job(sqlite_engine)
    assert run_job(sqlite_engine, done, render, keep=KEEP) == "success"
    row = sqlite_row(sqlite_engine, done)
    assert (row.status, row.progress_done, row.progress_total) == ("SUCCESS", todos, todos)
    assert row.result.count("BEGIN:VEVENT") == todos

    stopped = sqlite_job(sqlite_engine)
    write = runner.reporter(sqlite_engine, stopped)
    seen: list[int] = []

    def report(stage: str, done: int, total: int | None) -> bool:
        if done >= FETCH_BATCH and not seen:  # a batch rendered: the API's cancel comes in
            seen.append(done)
            cancel(sqlite_engine, stopped)
        return write(stage, done, total)

    def cancelled_mid_stream(conn: Connection, progress: Progress) -> StoredResult:
        return render(conn, Progress(report, interval=0))

    assert run_job(sqlite_engine, stopped, cancelled_mid_stream, keep=KEEP) == "cancelled"
    assert seen == [FETCH_BATCH]
    row = sqlite_row(sqlite_engine, stopped)
    assert (row.status, row.result, row.progress_done) == ("CANCELLED", None, FETCH_BATCH)

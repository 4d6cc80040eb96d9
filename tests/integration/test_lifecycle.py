"""The job lifecycle on real Postgres: ownership, idempotency, failure recording."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy import Connection, Engine, text

from models.engine import create_db_engine
from models.lifecycle import lock_key
from models.results import StoredResult
from models.settings import Settings
from tests.integration.jobs import insert_job, insert_todos, job_row
from workers.calendar import calendar_result
from workers.errors import PermanentJobError
from workers.runner import Progress, Work, mark_failed, run_job

render = partial(calendar_result, uid_domain="taskoverflow.test")
#: How long results are kept (JOB_RESULT_TTL_S's default).
KEEP = timedelta(days=1)


def raising(exc: BaseException) -> Work:
    """Work that fails with ``exc``."""

    def work(conn: Connection, progress: Progress) -> StoredResult:
        raise exc

    return work


def test_a_job_runs_once_and_a_second_delivery_changes_nothing(engine: Engine):
    """Processing the same job twice leaves one SUCCESS row with identical output."""
    insert_todos(engine, 5)
    job_id = insert_job(engine)
    assert run_job(engine, job_id, render, keep=KEEP) == "success"
    first = job_row(engine, job_id)
    assert run_job(engine, job_id, render, keep=KEEP) == "skipped-finished"
    second = job_row(engine, job_id)
    assert first == second
    assert first.status == "SUCCESS"
    assert first.attempts == 1
    assert first.result.count("BEGIN:VEVENT") == 5
    assert first.started_at is not None
    assert first.finished_at is not None


def test_concurrent_deliveries_run_the_job_once(engine: Engine):
    """While one worker runs a job, a second copy of its message is dropped."""
    job_id = insert_job(engine)
    inside, release = threading.Event(), threading.Event()

    def slow_work(conn: Connection, progress: Progress) -> StoredResult:
        inside.set()
        assert release.wait(10)
        return render(conn, progress)

    outcomes: list[str] = []
    first = threading.Thread(
        target=lambda: outcomes.append(run_job(engine, job_id, slow_work, keep=KEEP))
    )
    first.start()
    assert inside.wait(10)
    assert run_job(engine, job_id, render, keep=KEEP) == "skipped-running"
    assert job_row(engine, job_id).status == "STARTED"
    release.set()
    first.join(10)
    assert outcomes == ["success"]
    row = job_row(engine, job_id)
    assert (row.status, row.attempts) == ("SUCCESS", 1)


def test_a_dead_owner_releases_the_job_at_once(engine: Engine):
    """If the worker holding a job dies (its connection ends), the next delivery runs it."""
    job_id = insert_job(engine, status="STARTED", attempts=1)
    holder = engine.connect()
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(job_id)})
    holder.commit()
    assert run_job(engine, job_id, render, keep=KEEP) == "skipped-running"
    pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()
    with engine.connect() as admin:  # what a SIGKILLed worker's socket closing does
        # The timeout makes it wait for the backend to be gone (and its lock with it).
        admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
    holder.invalidate()
    assert run_job(engine, job_id, render, keep=KEEP) == "success"
    assert job_row(engine, job_id).attempts == 2


@pytest.fixture
def stale_pool(settings: Settings, engine: Engine) -> Iterator[Engine]:
    """A worker-style engine (no pre-ping, one connection) whose pooled connection the
    server has just killed, as a Postgres restart or failover does."""
    worker_engine = create_db_engine(
        settings.database, application_name="tests-stale-pool", pool_size=1, pre_ping=False
    )
    with worker_engine.connect() as probe:  # the pool now holds this connection
        pid = probe.execute(text("SELECT pg_backend_pid()")).scalar()
    with engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
    yield worker_engine
    worker_engine.dispose()


def test_a_job_survives_a_database_restart_under_its_pooled_connection(
    engine: Engine, stale_pool: Engine
):
    """The worker's engine has no pre-ping: a pooled connection that died (Postgres
    restarted, failover) is found out by the lock statement and the job runs on a fresh one."""
    insert_todos(engine, 3)
    job_id = insert_job(engine)
    assert run_job(stale_pool, job_id, render, keep=KEEP) == "success"
    assert job_row(engine, job_id).result.count("BEGIN:VEVENT") == 3


def test_mark_failed_survives_a_database_restart_under_its_pooled_connection(
    engine: Engine, stale_pool: Engine
):
    """Recording an exhausted job uses the same engine: its reason is not lost to a dead
    pooled connection."""
    job_id = insert_job(engine, status="RETRY")
    assert mark_failed(stale_pool, job_id, "failed after 5 attempts: boom", keep=KEEP) is True
    assert job_row(engine, job_id).error == "failed after 5 attempts: boom"


def test_transient_failure_is_recorded_as_retry_and_reraised(engine: Engine):
    """A failing attempt sets RETRY with a one-line reason and lets the broker retry."""
    job_id = insert_job(engine)
    with pytest.raises(ConnectionError):
        run_job(
            engine,
            job_id,
            raising(ConnectionError("upstream went away\nsecond line")),
            keep=KEEP,
        )
    row = job_row(engine, job_id)
    assert (row.status, row.error, row.attempts) == (
        "RETRY",
        "ConnectionError: upstream went away",
        1,
    )
    assert run_job(engine, job_id, render, keep=KEEP) == "success"
    row = job_row(engine, job_id)
    assert (row.status, row.error, row.attempts) == ("SUCCESS", None, 2)


def test_permanent_failure_ends_the_job(engine: Engine):
    """PermanentJobError sets FAILURE at once, with its reason and a finish time."""
    job_id = insert_job(engine)
    with pytest.raises(PermanentJobError):
        run_job(engine, job_id, raising(PermanentJobError("cannot render this")), keep=KEEP)
    row = job_row(engine, job_id)
    assert (row.status, row.error) == ("FAILURE", "PermanentJobError: cannot render this")
    assert row.finished_at is not None
    assert run_job(engine, job_id, render, keep=KEEP) == "skipped-finished"


def test_unknown_job_is_skipped(engine: Engine):
    """A message for a job that does not exist does nothing."""
    assert run_job(engine, uuid.uuid4(), render, keep=KEEP) == "skipped-missing"


def test_mark_failed_never_overwrites_a_finished_job(engine: Engine):
    """Only unfinished jobs can be marked failed."""
    done = insert_job(engine, status="SUCCESS")
    open_job = insert_job(engine, status="RETRY")
    assert mark_failed(engine, done, "late", keep=KEEP) is False
    assert mark_failed(engine, open_job, "gave up", keep=KEEP) is True
    assert job_row(engine, done).status == "SUCCESS"
    assert (job_row(engine, open_job).status, job_row(engine, open_job).error) == (
        "FAILURE",
        "gave up",
    )


def test_calendar_reads_todos_with_bounded_batches(engine: Engine):
    """A 10,000-todo calendar streams from the database and holds every dated todo."""
    insert_todos(engine, 10_000)
    insert_todos(engine, 3, deadline=None)
    job_id = insert_job(engine)
    run_job(engine, job_id, render, keep=KEEP)
    result = job_row(engine, job_id).result
    assert result.count("BEGIN:VEVENT\r\n") == 10_000
    assert "UID:10000@taskoverflow.test\r\n" in result


def test_a_result_for_a_job_that_finished_meanwhile_is_dropped(engine: Engine):
    """Abandoned (or failed by another copy) while this attempt ran: the finished row stays
    as it is, and run_job says it skipped rather than succeeded."""
    job_id = insert_job(engine)

    def outlived(conn: Connection, progress: Progress) -> StoredResult:
        assert mark_failed(
            engine, job_id, "abandoned after 3 attempts that never finished", keep=KEEP
        )
        return render(conn, progress)

    assert run_job(engine, job_id, outlived, keep=KEEP) == "skipped-finished"
    row = job_row(engine, job_id)
    assert (row.status, row.result) == ("FAILURE", None)
    assert row.error == "abandoned after 3 attempts that never finished"

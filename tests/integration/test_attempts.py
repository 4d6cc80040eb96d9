"""Each ended attempt goes on record (job_attempts), however it ends, and leaves with its job."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import dramatiq
import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text

from models import Job, JobAttempt, lifecycle
from models.results import StoredResult, gzip_lines
from models.settings import JobSettings, Settings
from tests.integration.jobs import insert_job, job_row
from tests.integration.test_retention import sqlite  # noqa: F401 (fixture)
from tests.workers import stub_worker
from workers.errors import PermanentJobError
from workers.middleware import current_resources
from workers.runner import Progress, mark_failed, run_job

KEEP = timedelta(days=1)


def attempts(engine: Engine, job_id: uuid.UUID) -> list[tuple[int, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)
        ).all()
    for row in rows:
        assert row.started_at <= row.finished_at
        assert row.worker.endswith(f":{os.getpid()}")  # in-process workers: this process
    return [(row.attempt, row.outcome, row.error) for row in rows]


def failing_then(failures: int, error: type[Exception] = RuntimeError):  # type: ignore[no-untyped-def]
    """Work that raises ``error`` on its first ``failures`` runs, then renders "done"."""
    runs = []

    def work(conn: Connection, progress: Progress) -> StoredResult:
        runs.append(1)
        if len(runs) <= failures:
            raise error(f"failure {len(runs)}")
        return gzip_lines(["done"])

    return work


def test_a_success_at_the_first_try_leaves_one_attempt(engine: Engine):
    job_id = insert_job(engine)
    assert run_job(engine, job_id, failing_then(0), keep=KEEP) == "success"
    assert attempts(engine, job_id) == [(1, "success", None)]


def test_retries_leave_one_row_each_with_their_own_error(engine: Engine):
    job_id = insert_job(engine)
    work = failing_then(2)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            run_job(engine, job_id, work, keep=KEEP)
    assert run_job(engine, job_id, work, keep=KEEP) == "success"
    assert attempts(engine, job_id) == [
        (1, "retry", "RuntimeError: failure 1"),
        (2, "retry", "RuntimeError: failure 2"),
        (3, "success", None),
    ]
    with engine.connect() as conn:
        first = conn.execute(
            select(JobAttempt.started_at).where(
                JobAttempt.job_id == job_id, JobAttempt.attempt == 1
            )
        ).scalar_one()
    assert first < job_row(engine, job_id).started_at  # the job row keeps only the last


def test_a_permanent_error_is_one_failed_attempt(engine: Engine):
    job_id = insert_job(engine)
    with pytest.raises(PermanentJobError):
        run_job(engine, job_id, failing_then(1, PermanentJobError), keep=KEEP)
    assert attempts(engine, job_id) == [(1, "failure", "PermanentJobError: failure 1")]


def test_exhausted_retries_mark_the_last_attempt_failed(engine: Engine, settings: Settings):
    """Under a real Worker: every attempt but the last a retry, the last a failure."""
    job_id = insert_job(engine)

    def always_fails(job: str) -> None:
        def work(conn: Connection, progress: Progress) -> str:
            raise RuntimeError("no")

        resources = current_resources()
        run_job(resources.engine, uuid.UUID(job), work, keep=resources.settings.jobs.result_ttl)

    with stub_worker(settings) as broker:
        dramatiq.actor(always_fails, broker=broker, queue_name="poison")
        broker.get_actor("always_fails").send(str(job_id))
        with pytest.raises(RuntimeError):
            broker.join("poison", fail_fast=True)
    tries = settings.jobs.max_retries + 1
    assert job_row(engine, job_id).status == "FAILURE"
    assert [outcome for _, outcome, _ in attempts(engine, job_id)] == ["retry"] * (tries - 1) + [
        "failure"
    ]


def test_a_cancelled_attempt_is_on_record(engine: Engine):
    """A cancel asked while an earlier attempt ran (its worker died: no row for it): the next
    attempt stops at its claim, and says so."""
    job_id = insert_job(engine, status="STARTED", attempts=1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET cancel_requested_at = now() WHERE id = :id"), {"id": job_id}
        )
    assert run_job(engine, job_id, failing_then(0), keep=KEEP) == "cancelled"
    assert attempts(engine, job_id) == [(2, "cancelled", lifecycle.CANCELLED_REASON)]


def test_a_job_skipped_as_finished_adds_no_attempt(engine: Engine):
    job_id = insert_job(engine, status="SUCCESS", attempts=1)
    assert run_job(engine, job_id, failing_then(0), keep=KEEP) == "skipped-finished"
    assert attempts(engine, job_id) == []


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_attempts_leave_with_their_job(request: pytest.FixtureRequest, dialect: str):
    """The purge deletes jobs only; their attempts go with them (ON DELETE CASCADE, which
    SQLite enforces because the engine turns foreign keys on)."""
    engine: Engine = request.getfixturevalue("engine" if dialect == "postgresql" else "sqlite")
    old = uuid.uuid4()
    kept = uuid.uuid4()
    now = lifecycle.utcnow()
    with engine.begin() as conn:
        for job_id, finished in ((old, now - timedelta(days=31)), (kept, now)):
            conn.execute(
                insert(Job).values(
                    id=job_id,
                    kind="ical",
                    status="SUCCESS",
                    attempts=1,
                    created_at=finished,
                    updated_at=finished,
                    finished_at=finished,
                    expires_at=finished + KEEP,
                )
            )
            conn.execute(
                insert(JobAttempt).values(
                    job_id=job_id,
                    attempt=1,
                    started_at=finished,
                    finished_at=finished,
                    outcome="success",
                )
            )
    lifecycle.purge(engine, JobSettings())
    with engine.connect() as conn:
        left = conn.execute(select(JobAttempt.job_id, func.count()).group_by(JobAttempt.job_id))
        assert dict(left.all()) == {kept: 1}


def test_marking_an_exhausted_job_again_still_marks_its_last_attempt(engine: Engine):
    """mark_failed retried on a fresh connection after its update committed (the connection
    broke before the answer): the job is FAILURE already, and its last attempt is still put
    on record as the failure it was."""
    job_id = insert_job(engine)
    with pytest.raises(RuntimeError):
        run_job(engine, job_id, failing_then(1), keep=KEEP)
    with engine.begin() as conn:  # the first call's update, committed
        assert lifecycle.fail(conn, job_id, "exhausted", final=True, keep=KEEP)
    assert attempts(engine, job_id) == [(1, "retry", "RuntimeError: failure 1")]
    assert mark_failed(engine, job_id, "exhausted", keep=KEEP) is False
    assert attempts(engine, job_id) == [(1, "failure", "RuntimeError: failure 1")]

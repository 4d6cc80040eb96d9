"""The job lifecycle a worker drives: claim, run, record the outcome.

``run_job`` is what every actor calls. It takes the engine and a plain function that does the
work; it owns the transactions, so the work function only reads and computes. Running the
same job twice, even at once, leaves the same final row: the advisory lock (``job_lock``)
lets one worker at a time run it, and a finished job is never run again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, Engine, update
from sqlalchemy.orm import Session

from models import Job, JobStatus
from models.clock import utcnow
from workers.errors import PermanentJobError
from workers.job_lock import job_lock

log = structlog.get_logger("workers.lifecycle")

#: Longest error text we keep on a job row (a traceback's last line, not the whole of it).
MAX_ERROR_LENGTH = 1000

#: The work a job does: read what it needs through the session, return the result text.
Work = Callable[[Session, Job], str]


def describe(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failure."""
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return reason[:MAX_ERROR_LENGTH]


def run_job(engine: Engine, job_id: uuid.UUID, work: Work) -> str:
    """Run job ``job_id`` once if nobody else is running it and it has not finished.

    Returns the outcome (``success``, ``skipped-*``); raises what ``work`` raised after
    recording it (RETRY for transient errors, FAILURE for ``PermanentJobError``), so the
    broker's retry middleware can schedule the next attempt.
    """
    with engine.connect() as conn, job_lock(conn, job_id) as owned:
        if not owned:
            log.info("job skipped", reason="another worker is running it")
            return "skipped-running"
        with Session(bind=conn, expire_on_commit=False) as session:
            job = session.get(Job, job_id)
            if job is None:
                log.warning("job skipped", reason="no such job")
                return "skipped-missing"
            if JobStatus(job.status).is_final:
                log.info("job skipped", reason=f"already {job.status}")
                return "skipped-finished"
            job.status = JobStatus.STARTED
            job.attempts += 1
            job.started_at = utcnow()
            session.commit()
            log.info("job started", kind=job.kind, attempts=job.attempts)

            started = time.perf_counter()
            try:
                result = work(session, job)
            except BaseException as exc:
                session.rollback()
                final = isinstance(exc, PermanentJobError)
                _record_failure(session, job, exc, final=final)
                log.warning(
                    "job finished" if final else "job attempt failed",
                    outcome="failure" if final else "retry",
                    kind=job.kind,
                    attempts=job.attempts,
                    error=describe(exc),
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
                raise
            job.status = JobStatus.SUCCESS
            job.result = result
            job.error = None
            job.finished_at = utcnow()
            session.commit()
            log.info(
                "job finished",
                outcome="success",
                kind=job.kind,
                attempts=job.attempts,
                result_bytes=len(result),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return "success"


def _record_failure(session: Session, job: Job, exc: BaseException, *, final: bool) -> None:
    """Best effort: if the database itself is the failure, the reconciler will catch up."""
    try:
        job.status = JobStatus.FAILURE if final else JobStatus.RETRY
        job.error = describe(exc)
        if final:
            job.finished_at = utcnow()
        session.commit()
    except Exception as db_exc:
        session.rollback()
        log.warning("could not record job failure", error=describe(db_exc))


def mark_failed(engine: Engine, job_id: uuid.UUID, reason: str) -> bool:
    """Set an unfinished job to FAILURE with ``reason``; False if it was already final."""
    now = utcnow()
    with Session(engine) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.not_in([JobStatus.SUCCESS, JobStatus.FAILURE]))
            .values(
                status=JobStatus.FAILURE,
                error=reason[:MAX_ERROR_LENGTH],
                finished_at=now,
                updated_at=now,
            )
        )
        session.commit()
    return bool(cast("CursorResult[Any]", result).rowcount)

"""The job lifecycle a worker drives: claim, run, record the outcome.

``run_job`` is what every actor calls. It takes the engine and a plain function that does the
work; it owns the writes, so the work function only reads and computes. Running the same job
twice, even at once, leaves the same final row: the advisory lock (``owned_job``) lets one
worker at a time run it, and a finished job is never run again.

Round trips are what a small job costs (docs/BENCHMARKS.md, P1): on one autocommit
connection a job takes five statements (lock, claim, read, record, unlock), each its own
transaction, where the ORM version took fifteen (pre-ping, BEGIN, SELECT, UPDATE, COMMIT…).
Each write is still committed before the next step depends on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

import structlog
from sqlalchemy import Connection, Engine, bindparam, select, update

from models import Job, JobStatus
from models.clock import utcnow
from models.database import connect_autocommit
from workers.errors import PermanentJobError
from workers.job_lock import owned_job

log = structlog.get_logger("workers.lifecycle")

#: Longest error text we keep on a job row (a traceback's last line, not the whole of it).
MAX_ERROR_LENGTH = 1000


class ClaimedJob(NamedTuple):
    id: uuid.UUID
    kind: str
    #: How many times a worker has started it, this run included.
    attempts: int


#: The work a job does: read what it needs through the connection, return the result text.
Work = Callable[[Connection, ClaimedJob], str]

_FINAL = [status.value for status in JobStatus if status.is_final]

_CLAIM = (
    update(Job)
    .where(Job.id == bindparam("job_id"), Job.status.not_in(_FINAL))
    .values(
        status=JobStatus.STARTED.value,
        attempts=Job.attempts + 1,
        started_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(Job.kind, Job.attempts)
)

_SUCCEED = (
    update(Job)
    .where(Job.id == bindparam("job_id"))
    .values(
        status=JobStatus.SUCCESS.value,
        result=bindparam("result"),
        error=None,
        finished_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)


_STATUS = select(Job.status).where(Job.id == bindparam("job_id"))

_FAIL = (
    update(Job)
    .where(Job.id == bindparam("job_id"), Job.status.not_in(_FINAL))
    .values(
        status=bindparam("status"),
        error=bindparam("error"),
        finished_at=bindparam("finished_at"),
        updated_at=bindparam("now"),
    )
)


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
    with owned_job(engine, job_id) as (conn, owned):
        if not owned:
            log.info("job skipped", reason="another worker is running it")
            return "skipped-running"
        claimed = conn.execute(_CLAIM, {"job_id": job_id, "now": utcnow()}).one_or_none()
        conn.commit()  # autocommit: already durable; this ends SQLAlchemy's own bookkeeping
        if claimed is None:
            status = conn.execute(_STATUS, {"job_id": job_id}).scalar()
            if status is None:
                log.warning("job skipped", reason="no such job")
                return "skipped-missing"
            log.info("job skipped", reason=f"already {status}")
            return "skipped-finished"
        job = ClaimedJob(job_id, claimed.kind, claimed.attempts)
        # Debug only: "job finished" carries the same fields and the outcome, and one line per
        # job halves the worker's logging cost (py-spy: 9 % of its CPU on small calendars).
        log.debug("job started", kind=job.kind, attempts=job.attempts)

        started = time.perf_counter()
        try:
            result = work(conn, job)
        except BaseException as exc:
            final = isinstance(exc, PermanentJobError)
            _record_failure(conn, job, exc, final=final)
            log.warning(
                "job finished" if final else "job attempt failed",
                outcome="failure" if final else "retry",
                kind=job.kind,
                attempts=job.attempts,
                error=describe(exc),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            raise
        conn.execute(_SUCCEED, {"job_id": job_id, "result": result, "now": utcnow()})
        conn.commit()
        log.info(
            "job finished",
            outcome="success",
            kind=job.kind,
            attempts=job.attempts,
            result_bytes=len(result),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return "success"


def _fail(conn: Connection, job_id: uuid.UUID, reason: str, *, final: bool) -> bool:
    """RETRY (``final=False``) or FAILURE an unfinished job, with ``reason``; False if it had
    already finished."""
    now = utcnow()
    result = conn.execute(
        _FAIL,
        {
            "job_id": job_id,
            "status": JobStatus.FAILURE.value if final else JobStatus.RETRY.value,
            "error": reason[:MAX_ERROR_LENGTH],
            "finished_at": now if final else None,
            "now": now,
        },
    )
    conn.commit()  # autocommit: ends SQLAlchemy's own bookkeeping only
    return bool(result.rowcount)


def _record_failure(conn: Connection, job: ClaimedJob, exc: BaseException, *, final: bool) -> None:
    """Best effort: if the database itself is the failure, the reconciler will catch up."""
    try:
        conn.rollback()  # whatever the work left open
        _fail(conn, job.id, describe(exc), final=final)
    except Exception as db_exc:
        log.warning("could not record job failure", error=describe(db_exc))


def mark_failed(engine: Engine, job_id: uuid.UUID, reason: str) -> bool:
    """Set an unfinished job to FAILURE with ``reason``; False if it was already final.

    Runs on the worker's engine, which has no pre-ping: the guarded update is safe to retry
    on a fresh connection (``connect_autocommit``)."""
    conn, updated = connect_autocommit(engine, lambda conn: _fail(conn, job_id, reason, final=True))
    conn.close()
    return updated

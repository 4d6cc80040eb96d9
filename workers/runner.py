"""Running one job: own it, claim it, do its work, record the outcome.

``run_job`` is what every actor calls, with the engine and a plain function that does the
work (reads through the connection it is given and returns the result text). The status
writes are the job's transitions in ``models.lifecycle``; the work function only reads and
computes.

Delivery is at-least-once, so two workers can hold the same message (a redelivery after a
heartbeat timeout, a reconciler resend). On Postgres the worker that runs a job holds a
session-level advisory lock on its id for the whole attempt: a second worker that cannot take
it knows the job is running and drops its copy. If the owner dies, its connection closes and
Postgres frees the lock at once: a lease that needs no clock and no heartbeat. The
reconciler reads a free lock on a STARTED job as proof that its worker is gone.

One autocommit connection per job keeps a small job to five statements, each its own
transaction (lock, claim, read, record, unlock): round trips are what a small job costs
(docs/BENCHMARKS.md, P1). Each write is committed before the next step depends on it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import structlog
from sqlalchemy import BigInteger, Connection, Engine, bindparam, func, select

from models import lifecycle
from models.engine import connect_autocommit
from workers.errors import PermanentJobError

log = structlog.get_logger("workers.runner")

#: The work a job does: read what it needs through the connection, return the result text.
Work = Callable[[Connection], str]


def run_job(engine: Engine, job_id: uuid.UUID, work: Work) -> str:
    """Run job ``job_id`` once if nobody else is running it and it has not finished.

    Returns the outcome (``success``, ``skipped-*``); raises what ``work`` raised after
    recording it (RETRY for transient errors, FAILURE for ``PermanentJobError``), so the
    broker's retry middleware can schedule the next attempt.
    """
    # The lock is the connection's first statement: retried on a fresh connection if the
    # pooled one had died (nothing has happened yet then).
    conn, owned = connect_autocommit(engine, lambda conn: _try_lock(conn, job_id))
    with conn:
        if not owned:
            log.info("job skipped", reason="another worker is running it")
            return "skipped-running"
        try:
            job = lifecycle.claim(conn, job_id)
            conn.commit()  # autocommit: already durable; ends SQLAlchemy's bookkeeping
            if job is None:
                status = lifecycle.status(conn, job_id)
                log.info("job skipped", reason=f"already {status}" if status else "no such job")
                return "skipped-finished" if status else "skipped-missing"
            # Debug only: "job finished" carries the same fields and the outcome, and one line
            # per job halves the worker's logging cost (docs/BENCHMARKS.md, P1).
            log.debug("job started", kind=job.kind, attempts=job.attempts)
            started = time.perf_counter()
            try:
                result = work(conn)
            except BaseException as exc:
                final = isinstance(exc, PermanentJobError)
                _record_failure(conn, job_id, exc, final=final)
                log.warning(
                    "job finished" if final else "job attempt failed",
                    outcome="failure" if final else "retry",
                    kind=job.kind,
                    attempts=job.attempts,
                    error=lifecycle.describe(exc),
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
                raise
            recorded = lifecycle.succeed(conn, job_id, result)
            conn.commit()
            if not recorded:
                # Finished meanwhile (abandoned, or failed by another copy's last retry): a
                # finished job never changes, so this result is dropped, and said so.
                log.warning("job result dropped", reason="the job finished meanwhile")
                return "skipped-finished"
            log.info(
                "job finished",
                outcome="success",
                kind=job.kind,
                attempts=job.attempts,
                result_bytes=len(result),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return "success"
        finally:
            _release(conn, job_id)


def _record_failure(
    conn: Connection, job_id: uuid.UUID, exc: BaseException, *, final: bool
) -> None:
    """Best effort: if the database itself is the failure, the reconciler will catch up."""
    try:
        conn.rollback()  # whatever the work left open
        lifecycle.fail(conn, job_id, lifecycle.describe(exc), final=final)
        conn.commit()
    except Exception as db_exc:
        log.warning("could not record job failure", error=lifecycle.describe(db_exc))


def mark_failed(engine: Engine, job_id: uuid.UUID, reason: str) -> bool:
    """FAILURE for an unfinished job whose retries are exhausted; False if already final.

    Runs on the worker's engine, which has no pre-ping: the guarded update is safe to retry
    on a fresh connection (``connect_autocommit``)."""

    def fail(conn: Connection) -> bool:
        failed = lifecycle.fail(conn, job_id, reason, final=True)
        conn.commit()
        return failed

    conn, failed = connect_autocommit(engine, fail)
    conn.close()
    return failed


# --- Ownership: the advisory lock ----------------------------------------------------------

_TRY_LOCK = select(func.pg_try_advisory_lock(bindparam("key", type_=BigInteger)))
_UNLOCK = select(func.pg_advisory_unlock(bindparam("key", type_=BigInteger)))

# Stand-in for other databases (SQLite in the single-process run): a process-local set.
_local_guard = threading.Lock()
_local_held: set[uuid.UUID] = set()


def _try_lock(conn: Connection, job_id: uuid.UUID) -> bool:
    if conn.dialect.name != "postgresql":
        with _local_guard:
            acquired = job_id not in _local_held
            _local_held.add(job_id)
        return acquired
    acquired = bool(conn.execute(_TRY_LOCK, {"key": lifecycle.lock_key(job_id)}).scalar())
    conn.commit()  # ends SQLAlchemy's (autocommit: client-side only) transaction
    return acquired


def _release(conn: Connection, job_id: uuid.UUID) -> None:
    if conn.dialect.name != "postgresql":
        with _local_guard:
            _local_held.discard(job_id)
        return
    try:
        conn.rollback()  # leave no transaction open around the unlock
        conn.execute(_UNLOCK, {"key": lifecycle.lock_key(job_id)})
        conn.commit()
    except Exception:
        # Could not unlock (the connection broke, or the database went away). Never hand a
        # connection that may still hold the lock back to the pool: closing it frees the lock.
        conn.invalidate()
    except BaseException:
        # Dramatiq's time limit or shutdown interrupted the unlock: the same, then let it on.
        conn.invalidate()
        raise

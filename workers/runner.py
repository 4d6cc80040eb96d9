"""Running one job: own it, claim it, do its work, record the outcome.

``run_job`` is what every actor calls, with the engine and a plain function that does the
work: it reads through the connection it is given, tells its ``Progress`` now and then, and
returns the result (compressed as it was produced). The status writes are the job's transitions in
``models.lifecycle``; the work function only reads and computes.

Delivery is at-least-once, so two workers can hold the same message (a redelivery after a
heartbeat timeout, a reconciler resend). On Postgres the worker that runs a job holds a
session-level advisory lock on its id for the whole attempt: a second worker that cannot take
it knows the job is running and drops its copy. If the owner dies, its connection closes and
Postgres frees the lock at once: a lease that needs no clock and no heartbeat. The
reconciler reads a free lock on a STARTED job as proof that its worker is gone.

One autocommit connection per job keeps a small job to five statements, each its own
transaction (lock, claim, read, record, unlock): round trips are what a small job costs
(docs/BENCHMARKS.md, P1). Each write is committed before the next step depends on it.

Progress and cancel: a job that runs longer than PROGRESS_INTERVAL_S writes its progress
(``lifecycle.report``) at most once per interval, and that write is also where it learns of
a cancel request: the work then stops (``JobCancelled``) and the job ends CANCELLED. The
write goes through a short checkout of another pooled connection, because the job's own is
inside a transaction while it streams (models/engine.py ``worker_pool_size`` counts it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy import BigInteger, Connection, Engine, bindparam, func, select

from models import AttemptOutcome, JobStatus, lifecycle
from models.engine import connect_autocommit
from models.results import StoredResult
from workers import metrics as job_metrics
from workers.errors import JobCancelled, PermanentJobError

log = structlog.get_logger("workers.runner")

#: Longest a running job goes without writing its progress, and so without learning of a
#: cancel request: the bound on both the write rate (two a second per running job, whatever
#: its size) and the time a cancel takes to stop a job.
PROGRESS_INTERVAL_S = 0.5

#: Writes a running job's progress (stage, done, total); False: stop (see lifecycle.report).
Report = Callable[[str, int, int | None], bool]


class Progress:
    """What a running job says about itself: its stage and ``done`` of ``total`` items.

    The work calls ``update`` as often as it likes (once per batch of rows, not per row):
    an update costs a clock read, and writes only when PROGRESS_INTERVAL_S has passed since
    the claim or the last write. A job that finishes within the interval, which is nearly
    every calendar, never writes at all (docs/BENCHMARKS.md, P1). A write that says stop
    raises ``JobCancelled`` in the work, where it is.
    """

    def __init__(self, report: Report, *, interval: float | None = None) -> None:
        self._report = report
        self._interval = PROGRESS_INTERVAL_S if interval is None else interval
        self._due = time.monotonic() + self._interval
        self.stage = "starting"
        self.done = 0
        self.total: int | None = None

    def update(
        self, stage: str | None = None, *, done: int | None = None, total: int | None = None
    ) -> None:
        """Note the stage, items done and total (None: unchanged); written if one is due."""
        if stage is not None:
            self.stage = stage
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if time.monotonic() >= self._due:
            self.write()

    def write(self) -> None:
        """Write the progress now; ``JobCancelled`` if the job is to stop."""
        go_on = self._report(self.stage, self.done, self.total)
        self._due = time.monotonic() + self._interval
        if not go_on:
            raise JobCancelled("cancelled on request, or finished elsewhere")


#: The work a job does: read what it needs through the connection, tell the progress now
#: and then, return the result as stored (models.results: compressed as it was produced).
Work = Callable[[Connection, Progress], StoredResult]


def run_job(engine: Engine, job_id: uuid.UUID, work: Work, *, keep: timedelta) -> str:
    """Run job ``job_id`` once if nobody else is running it and it has not finished; its
    result (or the reason it has none) is served for ``keep`` (JOB_RESULT_TTL_S).

    Returns the outcome (``success``, ``cancelled``, ``skipped-*``); raises what ``work``
    raised after recording it (RETRY for transient errors, FAILURE for
    ``PermanentJobError``), so the broker's retry middleware can schedule the next attempt.
    A cancelled job returns normally: its message is done with.
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
            job_metrics.job_claimed(job)
            started = time.perf_counter()
            if job.cancel_requested:
                # Asked to stop while an earlier attempt ran (which then died): nothing to do.
                return _stop(conn, job_id, job, keep, started)
            # Debug only: "job finished" carries the same fields and the outcome, and one line
            # per job halves the worker's logging cost (docs/BENCHMARKS.md, P1).
            log.debug("job started", kind=job.kind, attempts=job.attempts)
            try:
                result = work(conn, Progress(reporter(engine, job_id)))
            except JobCancelled:
                conn.rollback()  # whatever the work left open
                return _stop(conn, job_id, job, keep, started)
            except BaseException as exc:
                final = isinstance(exc, PermanentJobError)
                settled = _record_failure(conn, job_id, job, exc, final=final, keep=keep)
                job_metrics.attempt_ended(
                    job,
                    AttemptOutcome.FAILURE if final else AttemptOutcome.RETRY,
                    time.perf_counter() - started,
                    finished=JobStatus.FAILURE if final and settled else None,
                )
                log.warning(
                    "job finished" if final else "job attempt failed",
                    outcome="failure" if final else "retry",
                    kind=job.kind,
                    attempts=job.attempts,
                    error=lifecycle.describe(exc),
                    duration_ms=_ms_since(started),
                )
                raise
            recorded = lifecycle.succeed_attempt(conn, job_id, job, result, keep)
            conn.commit()
            if not recorded:
                # A cancel asked for after the last progress write (the client was told the
                # job is stopping: it ends CANCELLED, never with a result), or finished
                # meanwhile (abandoned, failed by another copy's last retry): a finished job
                # never changes, so this result is dropped, and said so.
                return _stop(conn, job_id, job, keep, started, dropped=result.size)
            job_metrics.attempt_ended(
                job,
                AttemptOutcome.SUCCESS,
                time.perf_counter() - started,
                finished=JobStatus.SUCCESS,
            )
            log.info(
                "job finished",
                outcome="success",
                kind=job.kind,
                attempts=job.attempts,
                result_bytes=result.size,
                stored_bytes=len(result.data),
                duration_ms=_ms_since(started),
            )
            return "success"
        finally:
            _release(conn, job_id)


def _stop(
    conn: Connection,
    job_id: uuid.UUID,
    job: lifecycle.Claimed,
    keep: timedelta,
    started: float,
    *,
    dropped: int | None = None,
) -> str:
    """CANCELLED if a cancel was asked for (outcome ``cancelled``); otherwise the job had
    finished meanwhile and is left as it is (``skipped-finished``)."""
    stopped = lifecycle.stop_attempt(conn, job_id, job, keep)
    conn.commit()
    if not stopped:
        log.warning(
            "job result dropped" if dropped is not None else "job dropped",
            reason="the job finished meanwhile",
        )
        return "skipped-finished"
    job_metrics.attempt_ended(
        job, AttemptOutcome.CANCELLED, time.perf_counter() - started, finished=JobStatus.CANCELLED
    )
    log.info(
        "job finished",
        outcome="cancelled",
        kind=job.kind,
        attempts=job.attempts,
        result_dropped_bytes=dropped,
        duration_ms=_ms_since(started),
    )
    return "cancelled"


def reporter(engine: Engine, job_id: uuid.UUID) -> Report:
    """Progress writes for job ``job_id``, each on a pooled connection held for that one
    statement (the job's own may be inside its read transaction)."""

    def report(stage: str, done: int, total: int | None) -> bool:
        try:
            conn, go_on = connect_autocommit(
                engine, lambda conn: lifecycle.report(conn, job_id, stage, done, total)
            )
        except Exception as exc:
            # Progress is best effort: a database that is really gone fails the job's own
            # reads next, and the cancel request is read again at the next write.
            log.warning("could not write job progress", error=lifecycle.describe(exc))
            return True
        conn.close()
        return go_on

    return report


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _record_failure(
    conn: Connection,
    job_id: uuid.UUID,
    job: lifecycle.Claimed,
    exc: BaseException,
    *,
    final: bool,
    keep: timedelta,
) -> bool:
    """Best effort: if the database itself is the failure, the reconciler will catch up.
    True if recorded (False: the job had finished meanwhile, or the database failed)."""
    try:
        conn.rollback()  # whatever the work left open
        reason = lifecycle.describe(exc)
        failed = lifecycle.fail_attempt(conn, job_id, job, reason, final=final, keep=keep)
        conn.commit()
    except Exception as db_exc:
        log.warning("could not record job failure", error=lifecycle.describe(db_exc))
        return False
    return failed


def mark_failed(engine: Engine, job_id: uuid.UUID, reason: str, *, keep: timedelta) -> bool:
    """FAILURE for an unfinished job whose retries are exhausted (its reason served for
    ``keep``); False if already final.

    Runs on the worker's engine, which has no pre-ping: the guarded update is safe to retry
    on a fresh connection (``connect_autocommit``)."""

    def fail(conn: Connection) -> bool:
        failed = lifecycle.fail(conn, job_id, reason, final=True, keep=keep)
        # Its last attempt went on record as a retry: it was the last. Whether or not this
        # call failed the job (a retry of the call after a lost connection finds it failed
        # already), so the record is right however often this runs.
        conn.execute(lifecycle.LAST_ATTEMPT_FINAL, {"failed_job": job_id})
        conn.commit()
        return failed

    conn, failed = connect_autocommit(engine, fail)
    conn.close()
    return failed


# --- Ownership: the advisory lock ----------------------------------------------------------

_TRY_LOCK = select(func.pg_try_advisory_lock(bindparam("key", type_=BigInteger)))
_UNLOCK = select(func.pg_advisory_unlock(bindparam("key", type_=BigInteger)))
_UNLOCK_SQL = "SELECT pg_advisory_unlock(%(key)s)"

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
        key = lifecycle.lock_key(job_id)
        if conn.dialect.driver == "psycopg2":
            # Straight on the driver's cursor: SQLAlchemy's execute costs more CPU than
            # this statement's round trip (docs/BENCHMARKS.md, P1; models.lifecycle).
            with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(_UNLOCK_SQL, {"key": key})
        else:
            conn.execute(_UNLOCK, {"key": key})
            conn.commit()
    except Exception:
        # Could not unlock (the connection broke, or the database went away). Never hand a
        # connection that may still hold the lock back to the pool: closing it frees the lock.
        conn.invalidate()
    except BaseException:
        # Dramatiq's time limit or shutdown interrupted the unlock: the same, then let it on.
        conn.invalidate()
        raise

"""The job's life: every change of a job's status, and nothing else writes one.

=============  ===============================  ==========  ==========
transition     from                             to          made by
=============  ===============================  ==========  ==========
submit         (new)                            PENDING     API
retry          FAILURE, CANCELLED               (new job)   API (a new job, ``retry_of``)
fail_unsent    PENDING (its message not sent)   FAILURE     API
cancel         PENDING, RETRY (queued)          CANCELLED   API
cancel         STARTED                          unchanged   API (asks its worker to stop)
claim          any unfinished                   STARTED     worker
report         STARTED                          unchanged   worker (progress; reads cancel)
succeed        unfinished, no cancel asked      SUCCESS     worker
fail           any unfinished                   RETRY       worker (transient error)
fail, final    any unfinished                   FAILURE     worker (permanent, exhausted)
stop           unfinished, cancel asked         CANCELLED   worker (honours the request)
resend         stranded, attempts left          unchanged   reconciler (sends it again)
abandon        stranded, attempts used up       FAILURE     reconciler
abandon        stranded, cancel requested       CANCELLED   reconciler
expire         finished, past expires_at        unchanged   purge (result dropped)
forget         finished, past the record's TTL  (deleted)   purge
=============  ===============================  ==========  ==========

Besides the job's row, each attempt that ends leaves a row in ``job_attempts``
(``record_attempt``, by the worker that ran it): the job's history, which nothing changes.

A finished job (SUCCESS, FAILURE, CANCELLED) never changes again, except that its result
is dropped when it expires and its row deleted later still: every statement is guarded by
the states it may leave. Each transition is one SQLAlchemy Core statement over the ``jobs``
table; the API runs its own on its async driver (``api.queries``), workers and the
reconciler run theirs on a sync ``Connection`` through the functions below.

Every transition to a final state stamps ``expires_at`` (finished_at + JOB_RESULT_TTL_S):
the result is served until then, and ``410 Gone`` after.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    LargeBinary,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.dialects.postgresql import insert as insert_or_skip
from sqlalchemy.dialects.postgresql.psycopg2 import dialect as psycopg2_dialect
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from models.attempt import AttemptOutcome, JobAttempt
from models.clock import utcnow
from models.idempotency import IdempotencyKey
from models.job import FINAL_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from models.results import StoredResult
from models.settings import JobSettings

#: Longest error text kept on a job row (a traceback's last line, not the whole of it).
MAX_ERROR_LENGTH = 1000

#: Jobs the reconciler handles per pass and per transition; the rest wait for the next pass.
RECONCILE_BATCH = 200

#: A STARTED job younger than this is not taken for an orphan even if its lock is free: a
#: margin for the clocks of the worker that stamped it and of the reconciler, which may be
#: different hosts.
ORPHAN_GRACE_S = 5

#: Rows each purge statement expires or deletes at once: short transactions, short locks.
PURGE_BATCH = 500
#: Batches per purge pass at most; a backlog larger than this waits for the next pass.
PURGE_MAX_BATCHES = 20

#: The error recorded on a job stopped by a cancel request.
CANCELLED_REASON = "cancelled on request"

_FINAL = sorted(status.value for status in FINAL_STATUSES)
_UNFINISHED = Job.status.not_in(_FINAL)
_QUEUED = Job.status.in_([JobStatus.PENDING.value, JobStatus.RETRY.value])


def describe(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failure, short enough to store."""
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return reason[:MAX_ERROR_LENGTH]


# --- The statements ---------------------------------------------------------------------

#: What a new job's row is made of (submissions; a retry takes its kind from the job).
_NEW_JOB = {
    "id": bindparam("id", type_=Job.id.type),
    "kind": bindparam("kind", type_=Job.kind.type),
    "status": literal(JobStatus.PENDING.value, String),
    "attempts": literal(0),
    "created_at": bindparam("now", type_=Job.created_at.type),
    "enqueued_at": bindparam("now", type_=Job.created_at.type),
    "updated_at": bindparam("now", type_=Job.created_at.type),
    # The job belongs to the trace of the request that asked for it ...
    "traceparent": bindparam("traceparent", None, type_=Job.traceparent.type),
    # ... and to the client that asked for it (its quota counts it).
    "client": bindparam("client", None, type_=Job.client.type),
}


def submit(admitted: ColumnElement[bool] | None = None) -> Insert:
    """API: a new job, committed before its message is sent (a worker must find the row);
    :traceparent is the submitting request's trace context, :client who submitted it.
    Only if ``admitted`` holds (the limits: api.admission), else no row."""
    chosen = select(*_NEW_JOB.values())
    if admitted is not None:
        chosen = chosen.where(admitted)
    return insert(Job).from_select(list(_NEW_JOB), chosen)


def retry(admitted: ColumnElement[bool] | None = None) -> Insert:
    """API: job :id, a new PENDING job of the same kind as job :retry_of if that one is
    FAILURE or CANCELLED and has not been retried yet, and ``admitted`` holds (else no row).
    A new job, not the old one started again: a finished job never changes, so what a client
    saw of it stays true and its failure stays on record. Returns the new job's kind (sent
    like a submission)."""
    columns = {**_NEW_JOB, "kind": Job.kind, "retry_of": Job.id}
    conditions = [
        Job.id == bindparam("retry_of", type_=Job.id.type),
        Job.status.in_(sorted(status.value for status in RETRYABLE_STATUSES)),
    ]
    if admitted is not None:
        conditions.append(admitted)  # last: only the job's own row gets to ask
    return (
        insert_or_skip(Job)
        .from_select(list(columns), select(*columns.values()).where(*conditions))
        # A second retry of the same job (a client retrying its POST) makes nothing.
        .on_conflict_do_nothing(index_elements=["retry_of"])
        .returning(Job.kind)
    )


SUBMIT = submit()
RETRY = retry()


def _transition(allowed: ColumnElement[bool], to: Any, **values: Any) -> Update:
    """Job :job_id to status ``to``, only from a state ``allowed`` admits; stamps updated_at."""
    return (
        update(Job)
        .where(Job.id == bindparam("job_id"), allowed)
        .values(status=to, updated_at=bindparam("now"), **values)
    )


_NOW: BindParameter[Any] = bindparam("now")

_EXPIRES: BindParameter[Any] = bindparam("expires_at")

#: API: the message could not be sent; FAILURE at once, so nothing waits for the job.
FAIL_UNSENT = _transition(
    Job.status == JobStatus.PENDING.value,
    JobStatus.FAILURE.value,
    error=bindparam("error"),
    finished_at=_NOW,
    expires_at=_EXPIRES,
)

#: API: cancel an unfinished job. Queued (PENDING, RETRY): CANCELLED at once, and its message
#: is dropped when a worker gets it (the claim finds it finished). Running (STARTED): the
#: request is recorded and the job stays STARTED until its worker, at its next progress
#: report, stops and records CANCELLED (``stop``). No row: the job is missing or finished.
CANCEL = (
    update(Job)
    .where(Job.id == bindparam("job_id"), _UNFINISHED)
    .values(
        status=case((_QUEUED, JobStatus.CANCELLED.value), else_=Job.status),
        error=case((_QUEUED, CANCELLED_REASON), else_=Job.error),
        finished_at=case((_QUEUED, _NOW), else_=Job.finished_at),
        expires_at=case((_QUEUED, _EXPIRES), else_=Job.expires_at),
        cancel_requested_at=func.coalesce(Job.cancel_requested_at, _NOW),
        updated_at=_NOW,
    )
)

#: Worker: take an unfinished job for one attempt (returns its kind, attempt count, when a
#: cancel was asked for, if one was while an earlier attempt ran, and when the job was
#: created, for its queue wait). Progress starts
#: afresh. The timestamp itself, not ``IS NOT NULL`` on it: SQLite 3.40 (the zero-setup
#: run's) answers true to that in a RETURNING clause even for a NULL.
CLAIM = _transition(
    _UNFINISHED,
    JobStatus.STARTED.value,
    attempts=Job.attempts + 1,
    started_at=_NOW,
    stage=None,
    progress_done=None,
    progress_total=None,
).returning(Job.kind, Job.attempts, Job.cancel_requested_at, Job.created_at)

#: Worker: the running attempt's progress; also a heartbeat (updated_at). Returns when a
#: cancel was asked for (NULL: not); no row if the job is no longer STARTED (then the work
#: stops too).
REPORT = (
    update(Job)
    .where(Job.id == bindparam("job_id"), Job.status == JobStatus.STARTED.value)
    .values(
        stage=bindparam("stage"),
        progress_done=bindparam("done"),
        progress_total=bindparam("total"),
        updated_at=_NOW,
    )
    .returning(Job.cancel_requested_at)
)

#: Worker: the attempt produced the job's result. Not once a cancel was asked for: the
#: client was told the job is stopping, so it ends CANCELLED (``stop``) even if its work
#: finished before its next progress write could notice the request.
SUCCEED = _transition(
    and_(_UNFINISHED, Job.cancel_requested_at.is_(None)),
    JobStatus.SUCCESS.value,
    # The compressed bytes as they are (models.results), not through the column's text type.
    result=bindparam("result", type_=LargeBinary),
    result_bytes=bindparam("result_bytes"),
    error=None,
    finished_at=_NOW,
    expires_at=_EXPIRES,
    stage=None,
)

#: Worker: the attempt failed; RETRY (the broker delivers it again) or FAILURE (for good).
FAIL = _transition(
    _UNFINISHED,
    bindparam("status"),
    error=bindparam("error"),
    finished_at=bindparam("finished_at"),
    expires_at=bindparam("expires_at"),
)

#: Worker: the attempt stopped because a cancel was asked for; no result is written. Only
#: with a request on record: a job never ends CANCELLED that nobody cancelled.
STOP = _transition(
    and_(_UNFINISHED, Job.cancel_requested_at.is_not(None)),
    JobStatus.CANCELLED.value,
    error=CANCELLED_REASON,
    finished_at=_NOW,
    expires_at=_EXPIRES,
    stage=None,
)

#: A job's status, to tell why a claim found nothing to run.
STATUS = select(Job.status).where(Job.id == bindparam("job_id"))


def lock_key(job_id: uuid.UUID) -> int:
    """The signed 64-bit advisory lock key of a job: the first 8 bytes of its uuid4."""
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)


def lock_key_sql(job_id: ColumnElement[uuid.UUID]) -> ColumnElement[int]:
    """``lock_key`` computed by Postgres: the first 16 hex digits of the uuid as a bigint."""
    hex16 = func.replace(func.left(cast(job_id, String), 18), "-", "")
    return cast(cast(literal("x", String) + hex16, BIT(64)), BigInteger)


def _stranded(exhausted: bool, orphans: bool) -> Select[tuple[uuid.UUID]]:
    """Ids of jobs nobody will finish: PENDING past :pending_before, STARTED/RETRY untouched
    since :stale_before and, with ``orphans`` (Postgres), STARTED since :orphan_before whose
    worker is gone. ``exhausted``: only those started :max_attempts times or more (to
    abandon), otherwise only the others (to resend).

    Each part locks its rows with ``FOR UPDATE SKIP LOCKED``, so reconcilers in many
    processes never take the same job in one pass.
    """
    # A stranded job whose cancel was asked for is finished (CANCELLED), never sent again.
    attempts = (
        or_(Job.attempts >= bindparam("max_attempts"), Job.cancel_requested_at.is_not(None))
        if exhausted
        else and_(Job.attempts < bindparam("max_attempts"), Job.cancel_requested_at.is_(None))
    )
    late = (
        select(Job.id)
        .where(
            attempts,
            or_(
                and_(
                    Job.status == JobStatus.PENDING.value,
                    Job.enqueued_at < bindparam("pending_before"),
                ),
                and_(
                    Job.status.in_([JobStatus.STARTED.value, JobStatus.RETRY.value]),
                    Job.updated_at < bindparam("stale_before"),
                ),
            ),
        )
        .order_by(Job.created_at)
        .limit(RECONCILE_BATCH)
        .with_for_update(skip_locked=True)
        .subquery("late")
    )
    if not orphans:
        return select(late.c.id)
    # A running job's worker holds its advisory lock (workers.runner) on its own connection
    # for the whole attempt; Postgres drops the lock with the connection when the worker
    # dies, so a lock found free is proof of death: resend now rather than after the
    # broker's redelivery or the staleness limit. The LIMIT makes the candidates a fence:
    # the lock is only tried on STARTED jobs (a try on any other job could make its worker
    # believe somebody else runs it). Transaction-level: released when the pass commits.
    started = (
        select(Job.id)
        .where(
            attempts,
            Job.status == JobStatus.STARTED.value,
            Job.updated_at < bindparam("orphan_before"),
            # Not already resent since its last claim (its message may still be queued), or
            # resent longer ago than a PENDING job's grace: else every pass would send it
            # again while it waits behind a backlog.
            or_(
                Job.started_at.is_(None),
                Job.enqueued_at <= Job.started_at,
                Job.enqueued_at < bindparam("pending_before"),
            ),
        )
        .order_by(Job.updated_at)
        .limit(RECONCILE_BATCH)
        .with_for_update(skip_locked=True)
        .subquery("started")
    )
    free = select(started.c.id).where(func.pg_try_advisory_xact_lock(lock_key_sql(started.c.id)))
    return select(union(select(late.c.id), free).subquery("stranded").c.id)


def _abandon(orphans: bool):  # type: ignore[no-untyped-def]
    reason = (
        literal("abandoned after ", String)
        + cast(Job.attempts, String)
        + literal(" attempts that never finished", String)
        + func.coalesce(literal("; last error: ", String) + Job.error, literal("", String))
    )
    cancelled = Job.cancel_requested_at.is_not(None)
    return (
        update(Job)
        .where(Job.id.in_(_stranded(exhausted=True, orphans=orphans)))
        .values(
            status=case((cancelled, JobStatus.CANCELLED.value), else_=JobStatus.FAILURE.value),
            error=case(
                (cancelled, CANCELLED_REASON), else_=func.substr(reason, 1, MAX_ERROR_LENGTH)
            ),
            finished_at=bindparam("now"),
            expires_at=bindparam("expires_at"),
            updated_at=bindparam("now"),
        )
        .returning(Job.id, Job.kind, Job.status, Job.attempts)
    )


def _resend(orphans: bool):  # type: ignore[no-untyped-def]
    return (
        update(Job)
        .where(Job.id.in_(_stranded(exhausted=False, orphans=orphans)))
        .values(enqueued_at=bindparam("now"), updated_at=bindparam("now"))
        .returning(Job.id, Job.kind, Job.traceparent)
    )


#: Reconciler: give up on stranded jobs started as often as retries allow (something kills
#: the worker running them: out of memory, a crash loop), instead of looping forever; and
#: finish as CANCELLED those whose worker died after a cancel was asked for.
ABANDON = {orphans: _abandon(orphans) for orphans in (False, True)}

#: Reconciler: stamp stranded jobs as sent again (returns each one's id, kind and trace).
RESEND = {orphans: _resend(orphans) for orphans in (False, True)}


# --- The transitions, on a sync connection (workers, reconciler) ---------------------------


class Claimed(NamedTuple):
    kind: str
    #: How many times a worker has started the job, this attempt included.
    attempts: int
    #: A cancel was asked for while an earlier attempt ran: stop before doing anything.
    cancel_requested: bool
    #: When the job was submitted, and when this attempt started (both naive UTC).
    created_at: datetime
    started_at: datetime


def claim(conn: Connection, job_id: uuid.UUID) -> Claimed | None:
    """STARTED for one more attempt, or None if the job is missing or finished."""
    now = utcnow()
    params = {"job_id": job_id, "now": now}
    if _direct(conn):
        rows = _CLAIM_DIRECT.run(conn, params)
        row = rows[0] if rows else None
    else:
        row = conn.execute(CLAIM, params).one_or_none()
    return None if row is None else Claimed(row[0], row[1], row[2] is not None, row[3], now)


def status(conn: Connection, job_id: uuid.UUID) -> str | None:
    return conn.execute(STATUS, {"job_id": job_id}).scalar()


def report(conn: Connection, job_id: uuid.UUID, stage: str, done: int, total: int | None) -> bool:
    """Record the running attempt's progress; True if it should go on (still STARTED, and
    no cancel asked for), False if it should stop."""
    row = conn.execute(
        REPORT, {"job_id": job_id, "stage": stage, "done": done, "total": total, "now": utcnow()}
    ).one_or_none()
    return row is not None and row[0] is None


def _result_params(result: StoredResult, keep: timedelta) -> dict[str, Any]:
    now = utcnow()
    return {
        "result": result.data,
        "result_bytes": result.size,
        "now": now,
        "expires_at": now + keep,
    }


def succeed(conn: Connection, job_id: uuid.UUID, result: StoredResult, keep: timedelta) -> bool:
    """SUCCESS with ``result``, served for ``keep``; False if the job had finished meanwhile
    or a cancel was asked for (nothing written; then ``stop``)."""
    done = conn.execute(SUCCEED, {"job_id": job_id} | _result_params(result, keep))
    return bool(done.rowcount)


def fail(conn: Connection, job_id: uuid.UUID, reason: str, *, final: bool, keep: timedelta) -> bool:
    """RETRY (``final=False``) or FAILURE an unfinished job, with ``reason`` (kept for
    ``keep`` once final); False if it had already finished."""
    now = utcnow()
    result = conn.execute(
        FAIL,
        {
            "job_id": job_id,
            "status": JobStatus.FAILURE.value if final else JobStatus.RETRY.value,
            "error": reason[:MAX_ERROR_LENGTH],
            "finished_at": now if final else None,
            "expires_at": now + keep if final else None,
            "now": now,
        },
    )
    return bool(result.rowcount)


def stop(conn: Connection, job_id: uuid.UUID, keep: timedelta) -> bool:
    """CANCELLED, as a cancel was asked for; False if none was or the job had finished."""
    now = utcnow()
    done = conn.execute(STOP, {"job_id": job_id, "now": now, "expires_at": now + keep})
    return bool(done.rowcount)


#: Worker: the attempt that just ended, on record (see models.attempt).
RECORD_ATTEMPT = insert(JobAttempt).values(
    job_id=bindparam("job_id"),
    attempt=bindparam("attempt"),
    started_at=bindparam("started_at"),
    finished_at=bindparam("now"),
    outcome=bindparam("outcome"),
    error=bindparam("error"),
    worker=bindparam("worker"),
)

#: Worker: job :failed_job's last attempt, recorded as a retry, was its last: Dramatiq gave up on
#: the message (retries exhausted) and the job is FAILURE.
LAST_ATTEMPT_FINAL = (
    update(JobAttempt)
    .where(
        JobAttempt.job_id == bindparam("failed_job"),
        JobAttempt.outcome == AttemptOutcome.RETRY.value,
        # Only once the job is FAILURE: safe to run again, or after someone else failed it.
        JobAttempt.attempt
        == select(Job.attempts)
        .where(Job.id == bindparam("failed_job"), Job.status == JobStatus.FAILURE.value)
        .scalar_subquery(),
    )
    .values(outcome=AttemptOutcome.FAILURE.value)
)


def _worker_name() -> str:
    # The pid of the process running the attempt, not of the one that imported this module.
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def record_attempt(
    conn: Connection,
    job_id: uuid.UUID,
    claimed: Claimed,
    outcome: AttemptOutcome,
    error: str | None = None,
) -> None:
    """Put the attempt ``claimed`` began on record as ended now with ``outcome``."""
    conn.execute(
        RECORD_ATTEMPT,
        {
            "job_id": job_id,
            "attempt": claimed.attempts,
            "started_at": claimed.started_at,
            "now": utcnow(),
            "outcome": outcome.value,
            "error": None if error is None else error[:MAX_ERROR_LENGTH],
            "worker": _worker_name(),
        },
    )


def _and_record(transition: Update, outcome: Any, error: Any) -> Any:
    """Postgres: ``transition`` and the attempt's record in one statement (a data-modifying
    CTE), so the record exists as soon as the job's new state does (a client that reads the
    attempts on the NOTIFY of a finish finds it) and a crash cannot split them; also one
    round trip, not two: every small job pays for its round trips (docs/BENCHMARKS.md, P1).
    The attempt is inserted only if the transition happened, so the row count says which.
    Parameters: the transition's, and :attempt, :attempt_started, :worker (not
    "started_at": an UPDATE takes a parameter named after a column of its table as a value
    to SET, and the CTE's UPDATE is on jobs)."""
    done = transition.returning(Job.id).cte("transitioned")
    return (
        insert(JobAttempt)
        .from_select(
            ["job_id", "attempt", "started_at", "finished_at", "outcome", "error", "worker"],
            select(
                done.c.id,
                bindparam("attempt", type_=JobAttempt.attempt.type),
                bindparam("attempt_started", type_=JobAttempt.started_at.type),
                bindparam("now", type_=JobAttempt.finished_at.type),
                outcome,
                error,
                bindparam("worker", type_=JobAttempt.worker.type),
            ),
        )
        .add_cte(done)
    )


#: Worker, on Postgres: ``succeed``, ``fail`` and ``stop`` each with its attempt's record.
SUCCEED_AND_RECORD = _and_record(SUCCEED, literal(AttemptOutcome.SUCCESS.value, String), null())
FAIL_AND_RECORD = _and_record(
    FAIL, bindparam("outcome", type_=JobAttempt.outcome.type), bindparam("error", type_=Text)
)
STOP_AND_RECORD = _and_record(
    STOP, literal(AttemptOutcome.CANCELLED.value, String), literal(CANCELLED_REASON, String)
)


def _attempt_params(claimed: Claimed) -> dict[str, Any]:
    return {
        "attempt": claimed.attempts,
        "attempt_started": claimed.started_at,
        "worker": _worker_name(),
    }


def succeed_attempt(
    conn: Connection, job_id: uuid.UUID, claimed: Claimed, result: StoredResult, keep: timedelta
) -> bool:
    """``succeed``, and the attempt ``claimed`` began on record as its success, if it did."""
    if conn.dialect.name != "postgresql":
        done = succeed(conn, job_id, result, keep)
        if done:
            record_attempt(conn, job_id, claimed, AttemptOutcome.SUCCESS)
        return done
    params = {"job_id": job_id} | _result_params(result, keep) | _attempt_params(claimed)
    if _direct(conn):
        return bool(_SUCCEED_AND_RECORD_DIRECT.run(conn, params, rows=False))
    return bool(conn.execute(SUCCEED_AND_RECORD, params).rowcount)


def fail_attempt(
    conn: Connection,
    job_id: uuid.UUID,
    claimed: Claimed,
    reason: str,
    *,
    final: bool,
    keep: timedelta,
) -> bool:
    """``fail``, and the attempt ``claimed`` began on record as a retry or a failure."""
    outcome = AttemptOutcome.FAILURE if final else AttemptOutcome.RETRY
    if conn.dialect.name != "postgresql":
        done = fail(conn, job_id, reason, final=final, keep=keep)
        if done:
            record_attempt(conn, job_id, claimed, outcome, reason)
        return done
    now = utcnow()
    params = {
        "job_id": job_id,
        "status": JobStatus.FAILURE.value if final else JobStatus.RETRY.value,
        "error": reason[:MAX_ERROR_LENGTH],
        "finished_at": now if final else None,
        "expires_at": now + keep if final else None,
        "now": now,
        "outcome": outcome.value,
    }
    return bool(conn.execute(FAIL_AND_RECORD, params | _attempt_params(claimed)).rowcount)


def stop_attempt(conn: Connection, job_id: uuid.UUID, claimed: Claimed, keep: timedelta) -> bool:
    """``stop``, and the attempt ``claimed`` began on record as cancelled."""
    if conn.dialect.name != "postgresql":
        done = stop(conn, job_id, keep)
        if done:
            record_attempt(conn, job_id, claimed, AttemptOutcome.CANCELLED, CANCELLED_REASON)
        return done
    now = utcnow()
    params = {"job_id": job_id, "now": now, "expires_at": now + keep}
    return bool(conn.execute(STOP_AND_RECORD, params | _attempt_params(claimed)).rowcount)


# --- The hot path on psycopg2 ---------------------------------------------------------------
#
# Every small job runs claim and succeed-and-record once. Through ``conn.execute`` each costs
# SQLAlchemy's cache lookup, parameter processing and result wrapping: ~20 % of the worker's
# CPU in P1's profile, more than the statements' round trips (docs/BENCHMARKS.md, P1). On
# psycopg2 they run as SQL compiled once, here, straight on the driver's cursor, like the
# calendar read (workers/calendar.py). Same statements, same guards: only the layer between
# differs. Other drivers (SQLite) keep ``conn.execute``.

_POSTCOMPILE = re.compile(r"\(__\[POSTCOMPILE_(\w+)\]\)")


class _DirectStatement:
    """A Core statement compiled once for psycopg2 (pyformat parameters), with the values
    it holds itself (literals, the status lists of IN) as defaults under the caller's."""

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=psycopg2_dialect())
        self.defaults: dict[str, Any] = dict(compiled.params)
        expanding = {key for key, value in self.defaults.items() if isinstance(value, list)}
        for key in expanding:
            # psycopg2 renders a tuple as a parenthesised list: ``IN %(key)s``.
            self.defaults[key] = tuple(self.defaults[key])
        self.sql = _POSTCOMPILE.sub(lambda m: f"%({m.group(1)})s", str(compiled))
        missing = set(_POSTCOMPILE.findall(str(compiled))) - expanding
        assert not missing, f"unexpected expanding parameters: {missing}"  # noqa: S101

    def run(self, conn: Connection, params: dict[str, Any], *, rows: bool = True) -> Any:
        """The rows (``rows``) or the row count, on ``conn``'s own psycopg2 connection.

        Job ids go as text (psycopg2 adapts no uuid unless told; the SQL casts them), the
        result's bytes as bytea. A failure raises psycopg2's own error, unwrapped: nothing
        here tells them apart, and the runner's unlock, failing on a broken connection too,
        invalidates it rather than pooling it (workers.runner._release)."""
        values = self.defaults | {
            key: str(value) if isinstance(value, uuid.UUID) else value
            for key, value in params.items()
        }
        dbapi = conn.connection.dbapi_connection
        with dbapi.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(self.sql, values)
            return cursor.fetchall() if rows else cursor.rowcount


def _direct(conn: Connection) -> bool:
    return conn.dialect.driver == "psycopg2"


_CLAIM_DIRECT = _DirectStatement(CLAIM)
_SUCCEED_AND_RECORD_DIRECT = _DirectStatement(SUCCEED_AND_RECORD)


class Resent(NamedTuple):
    id: uuid.UUID
    kind: str
    #: The trace the job was submitted in (sent on with it), if any.
    traceparent: str | None


class Abandoned(NamedTuple):
    id: uuid.UUID
    kind: str
    #: FAILURE, or CANCELLED for a job whose cancel was asked for.
    status: str
    attempts: int


class Reconciled(NamedTuple):
    resent: list[Resent]
    abandoned: list[uuid.UUID]
    #: The abandoned jobs as they were settled (for the job metrics).
    settled: list[Abandoned]


def reconcile(engine: Engine, settings: JobSettings, *, recover_all: bool = False) -> Reconciled:
    """One pass: abandon stranded jobs past their attempts, stamp the others as sent again.

    Commits before it returns; the caller then sends each resent job to its kind's actor (a
    send that fails is retried on a later pass, once the job is stranded again).
    ``recover_all`` treats every unfinished job as stranded, whatever its age: right for a
    single process starting up, which knows that nothing else runs or holds its messages.
    """
    now = utcnow()
    params = {
        "now": now,
        "expires_at": now + settings.result_ttl,
        "max_attempts": settings.max_retries + 1,
        "pending_before": now - timedelta(seconds=0 if recover_all else settings.pending_grace_s),
        "stale_before": now - timedelta(seconds=0 if recover_all else settings.stale_after_s),
        "orphan_before": now - timedelta(seconds=ORPHAN_GRACE_S),
    }
    with engine.begin() as conn:
        orphans = conn.dialect.name == "postgresql"
        settled = [Abandoned(*row) for row in conn.execute(ABANDON[orphans], params)]
        resent = [
            Resent(row.id, row.kind, row.traceparent)
            for row in conn.execute(RESEND[orphans], params)
        ]
    return Reconciled(resent=resent, abandoned=[job.id for job in settled], settled=settled)


# --- Retention: expire results, forget old jobs and idempotency keys -----------------------


def _oldest(by: Any, before: str) -> Select[uuid.UUID]:
    """Finished jobs whose ``by`` is before :``before``, oldest first, a batch of them.

    Bounded and SKIP LOCKED: many worker processes purge at once without waiting on each
    other or taking the same rows, and no pass holds locks on more than one batch. Only
    finished jobs have these times; the status guard keeps it so whatever else changes.
    """
    return (
        select(Job.id)
        .where(by < bindparam(before), Job.status.in_(_FINAL))
        .order_by(by)
        .limit(PURGE_BATCH)
        .with_for_update(skip_locked=True)
    )


#: Purge: drop the results that have expired (the row stays, so the result answers 410).
EXPIRE = (
    update(Job)
    .where(Job.id.in_(_oldest(Job.expires_at, "now").where(Job.result.is_not(None))))
    .values(result=None, result_bytes=None)
)

#: Purge: delete finished jobs whose record has outlived JOB_RECORD_TTL_S. By the time they
#: finished, not by their expiry: that was stamped with the result TTL of its day, and a
#: changed JOB_RESULT_TTL_S must not move the record's end.
FORGET = delete(Job).where(Job.id.in_(_oldest(Job.finished_at, "forget_before")))

_key_batch = (
    select(IdempotencyKey.scope, IdempotencyKey.key)
    .where(IdempotencyKey.expires_at < bindparam("now"))
    .order_by(IdempotencyKey.expires_at)
    .limit(PURGE_BATCH)
    .with_for_update(skip_locked=True)
)

#: Purge: delete idempotency keys past their time.
FORGET_KEYS = delete(IdempotencyKey).where(
    tuple_(IdempotencyKey.scope, IdempotencyKey.key).in_(_key_batch)
)


class Purged(NamedTuple):
    results: int
    jobs: int
    keys: int


def purge(engine: Engine, settings: JobSettings) -> Purged:
    """One retention pass: expired results dropped, old jobs and idempotency keys deleted,
    a batch per transaction and at most PURGE_MAX_BATCHES batches of each."""
    counts = []
    for statement in (EXPIRE, FORGET, FORGET_KEYS):
        total = 0
        for _ in range(PURGE_MAX_BATCHES):
            now = utcnow()
            params = {
                "now": now,
                "forget_before": now - timedelta(seconds=settings.record_ttl_s),
            }
            with engine.begin() as conn:
                done = conn.execute(statement, params).rowcount
            total += done
            if done < PURGE_BATCH:
                break
        counts.append(total)
    return Purged(*counts)

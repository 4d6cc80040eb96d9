"""The job's life: every change of a job's status, and nothing else writes one.

=============  ===============================  ==========  ==========
transition     from                             to          made by
=============  ===============================  ==========  ==========
submit         (new)                            PENDING     API
fail_unsent    PENDING (its message not sent)   FAILURE     API
claim          any unfinished                   STARTED     worker
succeed        any unfinished                   SUCCESS     worker
fail           any unfinished                   RETRY       worker (transient error)
fail, final    any unfinished                   FAILURE     worker (permanent, exhausted)
resend         stranded, attempts left          unchanged   reconciler (sends it again)
abandon        stranded, attempts used up       FAILURE     reconciler
=============  ===============================  ==========  ==========

A finished job (SUCCESS, FAILURE) never changes again: every statement is guarded by the
states it may leave. Each transition is one SQLAlchemy Core statement over the ``jobs``
table; the API runs its two on its async driver (``api.queries``), workers and the
reconciler run theirs on a sync ``Connection`` through the functions below. Cancel and
expire, when they come, are two more rows of this table.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import BIT
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from models.clock import utcnow
from models.job import Job, JobStatus
from models.settings import JobSettings

#: Longest error text kept on a job row (a traceback's last line, not the whole of it).
MAX_ERROR_LENGTH = 1000

#: Jobs the reconciler handles per pass and per transition; the rest wait for the next pass.
RECONCILE_BATCH = 200

#: A STARTED job younger than this is not taken for an orphan even if its lock is free: a
#: margin for the clocks of the worker that stamped it and of the reconciler, which may be
#: different hosts.
ORPHAN_GRACE_S = 5

_FINAL = [status.value for status in JobStatus if status.is_final]
_UNFINISHED = Job.status.not_in(_FINAL)


def describe(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failure, short enough to store."""
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return reason[:MAX_ERROR_LENGTH]


# --- The statements ---------------------------------------------------------------------

#: API: a new job, committed before its message is sent (a worker must find the row).
SUBMIT = insert(Job).values(
    id=bindparam("id"),
    kind=bindparam("kind"),
    status=JobStatus.PENDING.value,
    attempts=0,
    created_at=bindparam("now"),
    enqueued_at=bindparam("now"),
    updated_at=bindparam("now"),
)


def _transition(allowed: ColumnElement[bool], to: Any, **values: Any) -> Update:
    """Job :job_id to status ``to``, only from a state ``allowed`` admits; stamps updated_at."""
    return (
        update(Job)
        .where(Job.id == bindparam("job_id"), allowed)
        .values(status=to, updated_at=bindparam("now"), **values)
    )


_NOW: BindParameter[Any] = bindparam("now")

#: API: the message could not be sent; FAILURE at once, so nothing waits for the job.
FAIL_UNSENT = _transition(
    Job.status == JobStatus.PENDING.value,
    JobStatus.FAILURE.value,
    error=bindparam("error"),
    finished_at=_NOW,
)

#: Worker: take an unfinished job for one attempt (returns its kind and attempt count).
CLAIM = _transition(
    _UNFINISHED, JobStatus.STARTED.value, attempts=Job.attempts + 1, started_at=_NOW
).returning(Job.kind, Job.attempts)

#: Worker: the attempt produced the job's result.
SUCCEED = _transition(
    _UNFINISHED, JobStatus.SUCCESS.value, result=bindparam("result"), error=None, finished_at=_NOW
)

#: Worker: the attempt failed; RETRY (the broker delivers it again) or FAILURE (for good).
FAIL = _transition(
    _UNFINISHED,
    bindparam("status"),
    error=bindparam("error"),
    finished_at=bindparam("finished_at"),
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
    attempts = (
        Job.attempts >= bindparam("max_attempts")
        if exhausted
        else Job.attempts < bindparam("max_attempts")
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
    return (
        update(Job)
        .where(Job.id.in_(_stranded(exhausted=True, orphans=orphans)))
        .values(
            status=JobStatus.FAILURE.value,
            error=func.substr(reason, 1, MAX_ERROR_LENGTH),
            finished_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .returning(Job.id)
    )


def _resend(orphans: bool):  # type: ignore[no-untyped-def]
    return (
        update(Job)
        .where(Job.id.in_(_stranded(exhausted=False, orphans=orphans)))
        .values(enqueued_at=bindparam("now"), updated_at=bindparam("now"))
        .returning(Job.id, Job.kind)
    )


#: Reconciler: give up on stranded jobs started as often as retries allow (something kills
#: the worker running them: out of memory, a crash loop), instead of looping forever.
ABANDON = {orphans: _abandon(orphans) for orphans in (False, True)}

#: Reconciler: stamp stranded jobs as sent again (returns each one's id and kind).
RESEND = {orphans: _resend(orphans) for orphans in (False, True)}


# --- The transitions, on a sync connection (workers, reconciler) ---------------------------


class Claimed(NamedTuple):
    kind: str
    #: How many times a worker has started the job, this attempt included.
    attempts: int


def claim(conn: Connection, job_id: uuid.UUID) -> Claimed | None:
    """STARTED for one more attempt, or None if the job is missing or finished."""
    row = conn.execute(CLAIM, {"job_id": job_id, "now": utcnow()}).one_or_none()
    return None if row is None else Claimed(row.kind, row.attempts)


def status(conn: Connection, job_id: uuid.UUID) -> str | None:
    return conn.execute(STATUS, {"job_id": job_id}).scalar()


def succeed(conn: Connection, job_id: uuid.UUID, result: str) -> bool:
    """SUCCESS with ``result``; False if the job had finished meanwhile (nothing written)."""
    done = conn.execute(SUCCEED, {"job_id": job_id, "result": result, "now": utcnow()})
    return bool(done.rowcount)


def fail(conn: Connection, job_id: uuid.UUID, reason: str, *, final: bool) -> bool:
    """RETRY (``final=False``) or FAILURE an unfinished job, with ``reason``; False if it had
    already finished."""
    now = utcnow()
    result = conn.execute(
        FAIL,
        {
            "job_id": job_id,
            "status": JobStatus.FAILURE.value if final else JobStatus.RETRY.value,
            "error": reason[:MAX_ERROR_LENGTH],
            "finished_at": now if final else None,
            "now": now,
        },
    )
    return bool(result.rowcount)


class Resent(NamedTuple):
    id: uuid.UUID
    kind: str


class Reconciled(NamedTuple):
    resent: list[Resent]
    abandoned: list[uuid.UUID]


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
        "max_attempts": settings.max_retries + 1,
        "pending_before": now - timedelta(seconds=0 if recover_all else settings.pending_grace_s),
        "stale_before": now - timedelta(seconds=0 if recover_all else settings.stale_after_s),
        "orphan_before": now - timedelta(seconds=ORPHAN_GRACE_S),
    }
    with engine.begin() as conn:
        orphans = conn.dialect.name == "postgresql"
        abandoned = [row.id for row in conn.execute(ABANDON[orphans], params)]
        resent = [Resent(row.id, row.kind) for row in conn.execute(RESEND[orphans], params)]
    return Reconciled(resent=resent, abandoned=abandoned)

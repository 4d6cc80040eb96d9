"""Finds jobs that nobody will finish and sends them again (or gives up on them).

A job can be stranded by a lost message (broker restart without persistence), an API that
died between its commit and its send, or a worker that died so hard its message was lost.
Every worker process runs ``reconcile_once`` periodically; ``FOR UPDATE SKIP LOCKED`` lets
them all do so at once without sending the same job twice in one round.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from models import Job, JobStatus
from models.clock import utcnow
from models.settings import JobSettings
from workers.job_lock import lock_key

#: Jobs handled per round; the rest wait for the next one.
BATCH_SIZE = 200


@dataclass
class Reconciled:
    resent: list[uuid.UUID] = field(default_factory=list)
    abandoned: list[uuid.UUID] = field(default_factory=list)


def reconcile_once(
    session: Session,
    settings: JobSettings,
    send: Callable[[uuid.UUID], None],
    *,
    recover_all: bool = False,
) -> Reconciled:
    """One pass: re-send stranded jobs, fail those past their attempts. Commits its own work.

    ``send`` is called only after the commit, one job id at a time; a send that fails is
    retried on a later pass. ``recover_all`` treats every unfinished job as stranded,
    whatever its age: right for a single process starting up, which knows that nothing
    else can be running or holding its jobs' messages.
    """
    now = utcnow()
    pending_before = now - timedelta(seconds=0 if recover_all else settings.pending_grace_s)
    stale_before = now - timedelta(seconds=0 if recover_all else settings.stale_after_s)
    stranded = session.scalars(
        select(Job)
        .where(
            or_(
                and_(Job.status == JobStatus.PENDING, Job.enqueued_at < pending_before),
                and_(
                    Job.status.in_([JobStatus.STARTED, JobStatus.RETRY]),
                    Job.updated_at < stale_before,
                ),
            )
        )
        .order_by(Job.created_at)
        .limit(BATCH_SIZE)
        .with_for_update(skip_locked=True)
    ).all()

    stranded = [*stranded, *_orphaned(session, now, exclude={j.id for j in stranded})]

    outcome = Reconciled()
    max_attempts = settings.max_retries + 1
    for job in stranded:
        if job.attempts >= max_attempts:
            # Started as often as retries allow and still unfinished: something kills the
            # worker running it (out of memory, a crash loop). Stop instead of looping forever.
            job.status = JobStatus.FAILURE
            job.error = f"abandoned after {job.attempts} attempts that never finished" + (
                f"; last error: {job.error}" if job.error else ""
            )
            job.finished_at = now
            outcome.abandoned.append(job.id)
        else:
            job.enqueued_at = now
            outcome.resent.append(job.id)
    session.commit()
    for job_id in outcome.resent:
        send(job_id)
    return outcome


#: A STARTED job younger than this is left alone even if its lock looks free: a margin for
#: the clocks of the worker that stamped it and of this pass, which may be different hosts.
ORPHAN_GRACE_S = 5

#: Transaction-level: released by this pass's commit, never held across passes.
_TRY_XACT_LOCK = select(func.pg_try_advisory_xact_lock(bindparam("key", type_=BigInteger)))


def _orphaned(session: Session, now: datetime, exclude: set[uuid.UUID]) -> list[Job]:
    """STARTED jobs whose owner is gone: nobody holds their advisory lock (Postgres only).

    A running job's worker holds the lock on its own connection for the whole attempt; when
    the worker dies, Postgres drops the lock with the connection. Finding the lock free is
    proof of death, so the job is re-sent now instead of after the broker's redelivery
    (SQS: the visibility timeout; Redis: heartbeat + maintenance) or the staleness limit.
    """
    if session.get_bind().dialect.name != "postgresql":
        return []
    candidates = session.scalars(
        select(Job)
        .where(
            Job.status == JobStatus.STARTED,
            Job.updated_at < now - timedelta(seconds=ORPHAN_GRACE_S),
        )
        .order_by(Job.updated_at)
        .limit(BATCH_SIZE)
        .with_for_update(skip_locked=True)
    ).all()
    orphans = []
    for job in candidates:
        if job.id in exclude:
            continue
        if session.scalar(_TRY_XACT_LOCK, {"key": lock_key(job.id)}):
            orphans.append(job)
    return orphans

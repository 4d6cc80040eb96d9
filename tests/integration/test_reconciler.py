"""The reconciler finds stranded jobs on real Postgres, and only those."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models import Job
from models.settings import Settings
from tests.integration.jobs import insert_job, job_row
from workers.reconciler import reconcile_once


def run(engine: Engine, settings: Settings) -> tuple[list[uuid.UUID], object]:
    sent: list[uuid.UUID] = []
    with Session(engine) as session:
        outcome = reconcile_once(session, settings.jobs, sent.append)
    return sent, outcome


def test_pending_jobs_past_the_grace_period_are_sent_again(engine: Engine, settings: Settings):
    """A job PENDING since longer than RECONCILE_PENDING_AFTER_S is re-sent; a fresh one is not."""
    grace = settings.jobs.pending_grace_s
    stranded = insert_job(engine, age_s=grace + 5)
    fresh = insert_job(engine, age_s=1)
    before = job_row(engine, stranded).enqueued_at
    sent, _ = run(engine, settings)
    assert sent == [stranded]
    assert job_row(engine, stranded).enqueued_at > before
    assert job_row(engine, fresh).status == "PENDING"
    # sent again only after another grace period
    assert run(engine, settings)[0] == []


def test_stale_started_and_retry_jobs_are_sent_again(engine: Engine, settings: Settings):
    """STARTED/RETRY untouched past time limit + max backoff + grace: the worker is gone."""
    stale = settings.jobs.stale_after_s
    started = insert_job(engine, status="STARTED", age_s=stale + 5, attempts=1)
    retry = insert_job(engine, status="RETRY", age_s=stale + 5, attempts=1)
    running = insert_job(engine, status="STARTED", age_s=1, attempts=1)
    finished = insert_job(engine, status="SUCCESS", age_s=stale + 5, attempts=1)
    sent, _ = run(engine, settings)
    assert set(sent) == {started, retry}
    assert running not in sent
    assert finished not in sent


def test_jobs_that_never_finish_are_abandoned_not_looped(engine: Engine, settings: Settings):
    """A job started max_retries + 1 times without finishing ends FAILURE with a reason."""
    attempts = settings.jobs.max_retries + 1
    job_id = insert_job(
        engine, status="STARTED", age_s=settings.jobs.stale_after_s + 5, attempts=attempts
    )
    sent, _outcome = run(engine, settings)
    assert sent == []
    row = job_row(engine, job_id)
    assert row.status == "FAILURE"
    assert row.error == f"abandoned after {attempts} attempts that never finished"


def test_concurrent_reconcilers_do_not_send_the_same_job(engine: Engine, settings: Settings):
    """SKIP LOCKED: a job locked by one pass is left to it by another running at once."""
    first_job = insert_job(engine, age_s=settings.jobs.pending_grace_s + 5)
    sent_by_inner: list[uuid.UUID] = []
    with Session(engine) as holder:
        # Hold the row lock as a slow reconciler pass would.
        holder.scalars(select(Job).where(Job.id == first_job).with_for_update()).one()
        with Session(engine) as other:
            reconcile_once(other, settings.jobs, sent_by_inner.append)
        holder.rollback()
    assert sent_by_inner == []
    assert run(engine, settings)[0] == [first_job]


def test_started_jobs_without_a_living_owner_are_sent_again_at_once(
    engine: Engine, settings: Settings
):
    """A STARTED job whose advisory lock nobody holds lost its worker: re-sent right away."""
    from sqlalchemy import text

    from workers.job_lock import lock_key
    from workers.reconciler import ORPHAN_GRACE_S

    orphan = insert_job(engine, status="STARTED", age_s=ORPHAN_GRACE_S + 1, attempts=1)
    owned = insert_job(engine, status="STARTED", age_s=ORPHAN_GRACE_S + 1, attempts=1)
    with engine.connect() as owner:  # a live worker running `owned`
        owner.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(owned)})
        owner.commit()
        sent, _ = run(engine, settings)
        owner.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(owned)})
        owner.commit()
    assert sent == [orphan]

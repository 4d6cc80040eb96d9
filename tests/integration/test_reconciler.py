"""The reconciler finds stranded jobs on real Postgres, and only those, and sends each to
the actor of its kind."""

from __future__ import annotations

import uuid

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select, text

from models import Job, lifecycle
from models.clock import utcnow
from models.engine import create_db_engine
from models.lifecycle import ORPHAN_GRACE_S, lock_key, lock_key_sql
from models.queue import ACTOR_BY_KIND
from models.settings import Settings
from tests.conftest import make_settings
from tests.integration.jobs import insert_job, job_row
from tests.services import migrate, scratch_database
from workers.reconciler import Reconciler, reconcile_and_send


def run(engine: Engine, settings: Settings) -> tuple[list[uuid.UUID], lifecycle.Reconciled]:
    """One pass; the ids it stamped to be sent again, and the whole outcome."""
    outcome = lifecycle.reconcile(engine, settings.jobs)
    return [job.id for job in outcome.resent], outcome


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
    with engine.connect() as holder:
        # Hold the row lock as a slow reconciler pass would.
        holder.execute(select(Job.id).where(Job.id == first_job).with_for_update()).one()
        sent_by_inner, _ = run(engine, settings)
        holder.rollback()
    assert sent_by_inner == []
    assert run(engine, settings)[0] == [first_job]


def test_started_jobs_without_a_living_owner_are_sent_again_at_once(
    engine: Engine, settings: Settings
):
    """A STARTED job whose advisory lock nobody holds lost its worker: re-sent right away."""
    orphan = insert_job(engine, status="STARTED", age_s=ORPHAN_GRACE_S + 1, attempts=1)
    owned = insert_job(engine, status="STARTED", age_s=ORPHAN_GRACE_S + 1, attempts=1)
    with engine.connect() as owner:  # a live worker running `owned`
        owner.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(owned)})
        owner.commit()
        sent, _ = run(engine, settings)
        owner.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(owned)})
        owner.commit()
    assert sent == [orphan]


def test_the_lock_key_is_the_same_in_python_and_in_postgres(engine: Engine):
    """Workers lock with ``lock_key``; the reconciler tests the lock with ``lock_key_sql``."""
    ids = [uuid.uuid4() for _ in range(200)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    with engine.connect() as conn:
        for job_id in ids:
            in_sql = conn.execute(select(lock_key_sql(text(":id").bindparams(id=job_id)))).scalar()
            assert in_sql == lock_key(job_id), job_id


def test_a_job_that_was_abandoned_keeps_its_last_error(engine: Engine, settings: Settings):
    attempts = settings.jobs.max_retries + 1
    job_id = insert_job(
        engine, status="RETRY", age_s=settings.jobs.stale_after_s + 5, attempts=attempts
    )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET error = 'TimeoutError: slow' WHERE id = :id"), {"id": job_id}
        )
    _, outcome = run(engine, settings)
    assert outcome.abandoned == [job_id]
    assert job_row(engine, job_id).error == (
        f"abandoned after {attempts} attempts that never finished; last error: TimeoutError: slow"
    )


@pytest.fixture
def two_kind_database() -> object:
    """A database whose jobs table also takes a test-only kind, ``echo`` (the product's
    schema allows only the kinds it has actors for)."""
    with scratch_database("taskoverflow_kinds") as url:
        migrate(url)
        settings = make_settings(url)
        engine = create_db_engine(settings.database, application_name="tests")
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE jobs DROP CONSTRAINT ck_jobs_kind"))
        yield engine, settings
        engine.dispose()


def test_stranded_jobs_are_sent_to_the_actor_of_their_kind(
    two_kind_database: tuple[Engine, Settings], monkeypatch: pytest.MonkeyPatch
):
    """A stranded ``echo`` job reaches the ``echo`` actor, a calendar job ``render_calendar``:
    the reconciler never resends every job as a calendar job."""
    engine, settings = two_kind_database
    monkeypatch.setitem(ACTOR_BY_KIND, "echo", "echo_job")
    calendar_job = insert_job(engine, age_s=settings.jobs.pending_grace_s + 5)
    echo_job = insert_job(engine, age_s=settings.jobs.pending_grace_s + 5)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET kind = 'echo' WHERE id = :id"), {"id": echo_job})

    broker = StubBroker()
    queue = settings.broker.queue_name
    received: dict[str, list[str]] = {"echo_job": [], "render_calendar": []}
    for name in received:
        dramatiq.actor(received[name].append, broker=broker, actor_name=name, queue_name=queue)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        done = reconcile_and_send(engine, broker, settings)
        broker.join(queue, fail_fast=True)
    finally:
        worker.stop()
        broker.close()
    assert sorted(done.resent) == sorted(
        [lifecycle.Resent(calendar_job, "ical", None), lifecycle.Resent(echo_job, "echo", None)]
    )
    assert received == {"echo_job": [str(echo_job)], "render_calendar": [str(calendar_job)]}


def test_an_orphan_is_resent_once_while_its_message_waits(engine: Engine, settings: Settings):
    """Resent orphans stay STARTED with a free lock until a worker takes the message; later
    passes leave them alone (no pile of duplicates behind a backlog) until a PENDING job's
    grace has passed since the resend."""
    orphan = insert_job(engine, status="STARTED", age_s=ORPHAN_GRACE_S + 1, attempts=1)
    with engine.begin() as conn:  # claimed (started_at) when it was stamped
        conn.execute(text("UPDATE jobs SET started_at = updated_at WHERE id = :id"), {"id": orphan})

    def age(seconds: float) -> None:
        """Move the job's resend and last change ``seconds`` into the past."""
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE jobs SET enqueued_at = enqueued_at - make_interval(secs => :s),"
                    " updated_at = updated_at - make_interval(secs => :s) WHERE id = :id"
                ),
                {"s": seconds, "id": orphan},
            )

    assert run(engine, settings)[0] == [orphan]
    age(ORPHAN_GRACE_S + 1)
    assert run(engine, settings)[0] == []
    age(settings.jobs.pending_grace_s)
    assert run(engine, settings)[0] == [orphan]


def ask_to_cancel(engine: Engine, job_id: uuid.UUID) -> None:
    """The API's cancel of a running job: only the request is recorded."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(lifecycle.CANCEL, {"job_id": job_id, "now": now, "expires_at": now})


def test_a_stranded_job_asked_to_cancel_ends_cancelled_not_resent(
    engine: Engine, settings: Settings
):
    """Its worker died after the cancel request: nobody will stop it, so the reconciler
    finishes it CANCELLED (attempts left or not) instead of running it again."""
    stale = settings.jobs.stale_after_s
    stranded = insert_job(engine, status="STARTED", age_s=stale + 5, attempts=1)
    orphan = insert_job(engine, status="STARTED", age_s=ORPHAN_GRACE_S + 1, attempts=1)
    running = insert_job(engine, status="STARTED", age_s=1, attempts=1)
    for job_id in (stranded, orphan, running):
        ask_to_cancel(engine, job_id)
    with engine.begin() as conn:  # the request itself is a change: age the rows again
        conn.execute(
            text("UPDATE jobs SET updated_at = created_at WHERE id IN (:a, :b)"),
            {"a": stranded, "b": orphan},
        )
    sent, outcome = run(engine, settings)
    assert sent == []
    assert sorted(outcome.abandoned) == sorted([stranded, orphan])
    for job_id in (stranded, orphan):
        row = job_row(engine, job_id)
        assert (row.status, row.error) == ("CANCELLED", lifecycle.CANCELLED_REASON)
        assert row.expires_at is not None
    assert job_row(engine, running).status == "STARTED"  # its worker will stop it


def test_a_pass_counts_the_jobs_it_abandons_as_finished(engine: Engine, settings: Settings):
    """Jobs settled by the reconciler (no attempt of theirs ever ended) are counted in
    taskoverflow_jobs_finished_total, which the failure alarm's EMF twin feeds (this
    process's registry: workers in this process write there)."""

    def finished(status: str) -> float:
        value = REGISTRY.get_sample_value(
            "taskoverflow_jobs_finished_total", {"kind": "ical", "status": status}
        )
        return value or 0.0

    before = finished("FAILURE"), finished("CANCELLED")
    attempts = settings.jobs.max_retries + 1
    stale = settings.jobs.stale_after_s + 5
    insert_job(engine, status="RETRY", age_s=stale, attempts=attempts)
    insert_job(engine, status="RETRY", age_s=stale, attempts=attempts)
    asked = insert_job(engine, status="STARTED", age_s=stale, attempts=1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET cancel_requested_at = now() WHERE id = :id"), {"id": asked}
        )
    Reconciler(engine, StubBroker(), settings).run_once()
    assert (finished("FAILURE") - before[0], finished("CANCELLED") - before[1]) == (2, 1)

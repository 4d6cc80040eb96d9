"""Retention (models.lifecycle.purge, run by every worker's reconciler thread): expired
results dropped, old jobs and idempotency keys deleted, unfinished jobs never touched; in
bounded batches that any number of processes can run at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, delete, func, insert, select

from models import Job, lifecycle, schema
from models.clock import utcnow
from models.engine import create_db_engine
from models.idempotency import IdempotencyKey
from models.lifecycle import PURGE_BATCH, PURGE_MAX_BATCHES, Purged
from models.settings import DatabaseSettings, JobSettings, Settings
from workers.reconciler import Reconciler

DAY = timedelta(days=1)


@pytest.fixture
def pg(engine: Engine) -> Engine:
    """The test database, its idempotency keys emptied too."""
    with engine.begin() as conn:
        conn.execute(delete(IdempotencyKey))
    return engine


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite file, as the zero-setup run has."""
    url = f"sqlite:///{tmp_path / 'retention.sqlite3'}"
    engine = create_db_engine(
        DatabaseSettings.from_env({"DATABASE_URL": url}), application_name="t"
    )
    schema.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue("pg" if request.param == "postgresql" else "sqlite")


def add_jobs(
    engine: Engine,
    count: int,
    *,
    status: str = "SUCCESS",
    finished_ago: timedelta | None = None,
    result: str | None = "BEGIN:VCALENDAR",
    keep: timedelta = DAY,
) -> list[uuid.UUID]:
    """``count`` jobs; finished ``finished_ago`` (their expiry stamped as the lifecycle does,
    ``keep`` after), or unfinished if None."""
    now = utcnow()
    finished = None if finished_ago is None else now - finished_ago
    ids = [uuid.uuid4() for _ in range(count)]
    rows = [
        {
            "id": job_id,
            "kind": "ical",
            "status": status,
            "attempts": 1,
            "result": result,
            "created_at": now - timedelta(days=60),
            "updated_at": now - timedelta(days=60),
            "finished_at": finished,
            "expires_at": None if finished is None else finished + keep,
        }
        for job_id in ids
    ]
    with engine.begin() as conn:
        conn.execute(insert(Job), rows)
    return ids


def add_keys(engine: Engine, count: int, *, expires_in: timedelta) -> None:
    now = utcnow()
    rows = [
        {
            "scope": "POST /api/v1/todos",
            "key": uuid.uuid4().hex,
            "fingerprint": "0" * 64,
            "created_at": now,
            "expires_at": now + expires_in,
        }
        for _ in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(IdempotencyKey), rows)


def jobs_by_id(engine: Engine) -> dict[uuid.UUID, tuple[str, str | None]]:
    with engine.connect() as conn:
        return {row.id: (row.status, row.result) for row in conn.execute(select(Job))}


def key_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one()


JOBS = JobSettings()  # one day of results, 30 days of records


def test_purge_drops_what_has_expired_and_nothing_else(any_engine: Engine):
    engine = any_engine
    fresh = add_jobs(engine, 3, finished_ago=timedelta(hours=1))
    expired = add_jobs(engine, 4, finished_ago=2 * DAY)
    failed = add_jobs(engine, 2, status="FAILURE", result=None, finished_ago=2 * DAY)
    forgotten = add_jobs(engine, 5, finished_ago=31 * DAY)
    # Unfinished: a retention pass never touches them, even with times that would make a
    # finished job expire and be forgotten (only the status guard keeps them).
    pending = add_jobs(engine, 2, status="PENDING", finished_ago=40 * DAY)
    started = add_jobs(engine, 2, status="STARTED", finished_ago=40 * DAY)
    retrying = add_jobs(engine, 2, status="RETRY", finished_ago=40 * DAY)
    add_keys(engine, 6, expires_in=-timedelta(minutes=1))
    add_keys(engine, 2, expires_in=DAY)

    assert lifecycle.purge(engine, JOBS) == Purged(results=4 + 5, jobs=5, keys=6)

    after = jobs_by_id(engine)
    assert set(after) == {*fresh, *expired, *failed, *pending, *started, *retrying}
    assert not set(forgotten) & set(after)
    assert {after[job] for job in fresh} == {("SUCCESS", "BEGIN:VCALENDAR")}
    assert {after[job] for job in expired} == {("SUCCESS", None)}
    assert {after[job] for job in failed} == {("FAILURE", None)}
    assert {after[job] for job in pending + started + retrying} == {
        ("PENDING", "BEGIN:VCALENDAR"),
        ("STARTED", "BEGIN:VCALENDAR"),
        ("RETRY", "BEGIN:VCALENDAR"),
    }
    assert key_count(engine) == 2
    assert lifecycle.purge(engine, JOBS) == Purged(0, 0, 0)  # nothing left to do


def test_a_longer_result_ttl_does_not_shorten_the_records_life(any_engine: Engine):
    """Results once kept a day, now a week: a job that finished 25 days ago under the old
    setting keeps its record until 30 days after it finished, as JOB_RECORD_TTL_S says."""
    engine = any_engine
    old = add_jobs(engine, 2, finished_ago=25 * DAY, result=None, keep=DAY)
    week = JobSettings.from_env({"JOB_RESULT_TTL_S": str(7 * 86_400)})
    assert lifecycle.purge(engine, week) == Purged(0, 0, 0)
    assert set(jobs_by_id(engine)) == set(old)


def test_a_pass_works_in_bounded_batches(pg: Engine):
    """Each statement takes PURGE_BATCH rows at most, a pass PURGE_MAX_BATCHES of them; the
    rest waits for the next pass."""
    backlog = PURGE_BATCH * PURGE_MAX_BATCHES
    add_jobs(pg, backlog + 7, finished_ago=2 * DAY)
    with pg.begin() as conn:
        assert conn.execute(lifecycle.EXPIRE, {"now": utcnow()}).rowcount == PURGE_BATCH
    assert lifecycle.purge(pg, JOBS).results == backlog - PURGE_BATCH + 7
    add_jobs(pg, backlog + 3, finished_ago=2 * DAY)
    assert lifecycle.purge(pg, JOBS).results == backlog
    assert lifecycle.purge(pg, JOBS).results == 3


def test_concurrent_purges_never_fail_and_purge_each_row_once(pg: Engine):
    """Worker processes purge at the same time: SKIP LOCKED gives each its own rows, and
    between them every expired row is purged exactly once."""
    expired, forgotten, keys = 4 * PURGE_BATCH + 11, 3 * PURGE_BATCH + 5, 2 * PURGE_BATCH + 3
    add_jobs(pg, expired, finished_ago=2 * DAY)
    add_jobs(pg, forgotten, result=None, status="FAILURE", finished_ago=40 * DAY)
    add_keys(pg, keys, expires_in=-DAY)
    start = threading.Barrier(3)
    outcomes: list[Purged | BaseException] = []

    def purge() -> None:
        start.wait()
        try:
            outcomes.append(lifecycle.purge(pg, JOBS))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=purge) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(outcome, Purged) for outcome in outcomes), outcomes
    assert len(outcomes) == 3
    totals = Purged(*(sum(column) for column in zip(*outcomes, strict=True)))
    # A pass may stop early when another holds the rest; the next pass finishes the work.
    totals = Purged(*(a + b for a, b in zip(totals, lifecycle.purge(pg, JOBS), strict=True)))
    assert totals == Purged(results=expired, jobs=forgotten, keys=keys)


def test_rows_another_pass_holds_are_skipped_not_waited_for(pg: Engine):
    (held,) = add_jobs(pg, 1, finished_ago=2 * DAY)
    free = add_jobs(pg, 3, finished_ago=2 * DAY)
    with pg.connect() as other:
        other.execute(select(Job.id).where(Job.id == held).with_for_update()).one()
        started = time.monotonic()
        assert lifecycle.purge(pg, JOBS).results == len(free)
        assert time.monotonic() - started < 5
        other.rollback()
    assert lifecycle.purge(pg, JOBS).results == 1


def test_the_reconciler_thread_purges_and_survives_a_failing_pass(pg: Engine, settings: Settings):
    """Every pass purges; a pass that fails (here: the database unreachable) is logged and
    the next one runs."""
    add_jobs(pg, 2, finished_ago=2 * DAY)
    broken = create_db_engine(
        DatabaseSettings.from_env({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}),
        application_name="tests",
    )
    broker = StubBroker()
    dramatiq.set_broker(broker)
    try:
        Reconciler(broken, broker, settings).run_once()  # must not raise
        Reconciler(pg, broker, settings).run_once()
    finally:
        broken.dispose()
        broker.close()
    assert {result for _, result in jobs_by_id(pg).values()} == {None}

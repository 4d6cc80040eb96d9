"""Quotas, backpressure and rate limits on the real app, database and Redis.

Each refusal: the status, the limit named in the message, Retry-After where waiting helps,
and nothing written or queued by the refused request. Concurrent requests never overshoot a
quota (the todo count's row lock, the jobs' advisory lock).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from models.settings import Settings
from tests.conftest import make_settings
from tests.integration.jobs import insert_job, insert_todos

TODOS = "/api/v1/todos"
ICAL = "/api/v1/todos/ical"


@contextmanager
def app_client(database_url: str, **env: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(database_url, **env))) as client:
        yield client


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def queued(settings: Settings) -> int:
    """Messages waiting on the test namespace's Redis queue."""
    import redis

    client = redis.Redis.from_url(settings.broker.url)
    try:
        return int(client.llen(f"{settings.broker.namespace}:{settings.broker.queue_name}"))
    finally:
        client.close()


# --- Quotas -------------------------------------------------------------------------------


def test_todos_beyond_todos_max_are_409_until_some_are_deleted(database_url, engine):
    with app_client(database_url, TODOS_MAX="3") as client:
        ids = [client.post(TODOS, json={"title": f"t{i}"}).json()["id"] for i in range(3)]
        refused = client.post(TODOS, json={"title": "one too many"})
        assert refused.status_code == 409
        assert "TODOS_MAX" in refused.json()["error"]
        assert "delete" in refused.json()["error"]
        assert count(engine, "SELECT count(*) FROM todos") == 3
        assert client.delete(f"{TODOS}/{ids[0]}").status_code == 200
        assert client.post(TODOS, json={"title": "room again"}).status_code == 201
        assert count(engine, "SELECT count(*) FROM todos") == 3


def at_once(client: TestClient, method: str, path: str, n: int, **kwargs: object) -> list[int]:
    """``n`` requests in flight together (threads into the app's one event loop)."""
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: client.request(method, path, **kwargs), range(n)))
    return sorted(a.status_code for a in answers)


def test_concurrent_creations_never_overshoot_todos_max(database_url, engine):
    """30 creations at once on separate connections, room for 7: exactly 7 rows."""
    with app_client(database_url, TODOS_MAX="7", RATE_LIMIT_WRITES_PER_MINUTE="0") as client:
        statuses = at_once(client, "POST", TODOS, 30, json={"title": "t"})
    assert (statuses.count(201), statuses.count(409)) == (7, 23), statuses
    assert count(engine, "SELECT count(*) FROM todos") == 7


def test_the_todo_counts_follow_every_write_to_todos(engine):
    """Triggers keep todo_counts right for writes that bypass the API: bulk inserts,
    deadline changes, deletes, TRUNCATE."""

    def counts() -> tuple[int, int]:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT todos, dated FROM todo_counts")).one()
            actual = conn.execute(text("SELECT count(*), count(deadline_at) FROM todos")).one()
        assert tuple(row) == tuple(actual)
        return int(row[0]), int(row[1])

    assert counts() == (0, 0)
    insert_todos(engine, 1000)
    insert_todos(engine, 500, deadline=None)
    assert counts() == (1500, 1000)
    with engine.begin() as conn:
        conn.execute(text("UPDATE todos SET deadline_at = NULL WHERE id <= 100"))
        conn.execute(text("UPDATE todos SET deadline_at = now() WHERE id > 1400"))
        conn.execute(text("UPDATE todos SET completed = true"))  # deadline unchanged
        conn.execute(text("DELETE FROM todos WHERE id % 3 = 0"))
    counts()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE todos"))
    assert counts() == (0, 0)


def test_a_calendar_over_calendar_max_events_is_422_and_undated_todos_do_not_count(
    database_url, engine
):
    settings = make_settings(database_url, CALENDAR_MAX_EVENTS="5")
    with TestClient(create_app(settings)) as client:
        insert_todos(engine, 5)
        insert_todos(engine, 50, deadline=None)  # no deadline: no event
        assert client.post(ICAL).status_code == 202
        insert_todos(engine, 1, deadline=datetime(2031, 1, 1))
        refused = client.post(ICAL)
        assert refused.status_code == 422
        assert "CALENDAR_MAX_EVENTS" in refused.json()["error"]
        assert "6 events" in refused.json()["error"]
        assert count(engine, "SELECT count(*) FROM jobs") == 1
        assert queued(settings) == 1


# --- Per-client jobs and backpressure -----------------------------------------------------


def test_a_client_with_too_many_unfinished_jobs_gets_429_with_retry_after(database_url, engine):
    settings = make_settings(database_url, JOBS_MAX_UNFINISHED_PER_CLIENT="2")
    with TestClient(create_app(settings)) as client:
        assert [client.post(ICAL).status_code for _ in range(2)] == [202, 202]
        refused = client.post(ICAL)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"
        assert "JOBS_MAX_UNFINISHED_PER_CLIENT" in refused.json()["error"]
        assert count(engine, "SELECT count(*) FROM jobs") == 2
        assert queued(settings) == 2
        # Another client's jobs are its own: the quota is per client.
        insert_job(engine)  # a job of nobody's (before the limits)
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET status = 'SUCCESS' WHERE client IS NOT NULL"))
        assert client.post(ICAL).status_code == 202  # its jobs finished: room again


def test_a_full_backlog_is_503_with_retry_after_before_anything_is_queued(database_url, engine):
    settings = make_settings(database_url, JOBS_MAX_UNFINISHED="3", BACKLOG_RETRY_AFTER_S="7")
    for status in ("PENDING", "STARTED"):
        insert_job(engine, status=status)
    insert_job(engine, status="SUCCESS")  # finished: not backlog
    with TestClient(create_app(settings)) as client:
        assert client.post(ICAL).status_code == 202
        refused = client.post(ICAL)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "7"
        assert "JOBS_MAX_UNFINISHED" in refused.json()["error"]
        assert count(engine, "SELECT count(*) FROM jobs") == 4
        assert queued(settings) == 1
        # A retry is a new job: the same limit.
        failed = insert_job(engine, status="FAILURE")
        retry = client.post(f"/api/v1/jobs/{failed}/retry")
        assert retry.status_code == 503
        assert "JOBS_MAX_UNFINISHED" in retry.json()["error"]


def test_concurrent_submissions_never_overshoot_the_backlog_limit(database_url, engine):
    settings = make_settings(
        database_url,
        JOBS_MAX_UNFINISHED="6",
        JOBS_MAX_UNFINISHED_PER_CLIENT="100",
        RATE_LIMIT_WRITES_PER_MINUTE="0",
    )
    with TestClient(create_app(settings)) as client:
        statuses = at_once(client, "POST", ICAL, 25)
    assert (statuses.count(202), statuses.count(503)) == (6, 19), statuses
    assert count(engine, "SELECT count(*) FROM jobs") == 6
    assert queued(settings) == 6


# --- Rate limits --------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["redis", "postgres", "memory"])
def test_writes_past_the_rate_limit_are_429_with_ratelimit_headers(database_url, engine, store):
    env = {"RATE_LIMIT_WRITES_PER_MINUTE": "5", "RATE_LIMIT_READS_PER_MINUTE": "600"}
    if store != "redis":
        env["RATE_LIMIT_STORE"] = store
    with app_client(database_url, **env) as client:
        answers = [client.post(TODOS, json={"title": f"t{i}"}) for i in range(6)]
        assert [a.status_code for a in answers] == [201] * 5 + [429]
        first, refused = answers[0], answers[-1]
        assert first.headers["ratelimit-limit"] == "5"
        assert first.headers["ratelimit-remaining"] == "4"
        assert first.headers["ratelimit-policy"] == "5;w=60"
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
        # One write a 12 s: the next fits in at most 12 s.
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        assert "rate limit" in refused.json()["error"]
        assert "5 write" in refused.json()["error"]
        assert count(engine, "SELECT count(*) FROM todos") == 5  # the refused one wrote nothing
        # Reads have a budget of their own; health checks are never counted.
        read = client.get(TODOS)
        assert read.status_code == 200
        assert read.headers["ratelimit-limit"] == "600"
        health = client.get("/api/v1/health")
        assert health.status_code == 200
        assert "ratelimit-limit" not in health.headers


def test_two_apps_on_one_store_share_the_limit(database_url, engine):
    """Two API processes' worth of apps on one Redis namespace and one database: the
    limit is the client's across both, not per process."""
    env = {
        "RATE_LIMIT_WRITES_PER_MINUTE": "6",
        "BROKER_NAMESPACE": f"shared-{uuid.uuid4().hex[:8]}",
    }
    for store in ("redis", "postgres"):
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE rate_limits"))
        extra = {} if store == "redis" else {"RATE_LIMIT_STORE": "postgres"}
        env["BROKER_NAMESPACE"] = f"shared-{uuid.uuid4().hex[:8]}"
        with (
            app_client(database_url, **env, **extra) as one,
            app_client(database_url, **env, **extra) as two,
        ):
            statuses = [
                (one if i % 2 else two).post(TODOS, json={"title": "x"}).status_code
                for i in range(8)
            ]
        assert statuses == [201] * 6 + [429] * 2, (store, statuses)


def test_an_unreachable_store_lets_requests_through(database_url, engine):
    """The limit protects the service; its store failing must not take the service down."""
    with app_client(
        database_url, RATE_LIMIT_STORE="redis://127.0.0.1:1/0", RATE_LIMIT_WRITES_PER_MINUTE="1"
    ) as client:
        statuses = [client.post(TODOS, json={"title": "x"}).status_code for _ in range(3)]
    assert statuses == [201, 201, 201]


def test_a_job_that_finds_more_events_than_allowed_fails_saying_why(settings, engine):
    """Todos added after the submission can take a job past CALENDAR_MAX_EVENTS: the worker
    fails it for good, with the limit in the reason, instead of rendering it."""
    from workers.calendar import calendar_result
    from workers.errors import PermanentJobError

    class Quiet:
        def update(self, *args: object, **kwargs: object) -> None:
            pass

    for total in (40, 6000):  # the one-page path and the streamed path
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE todos"))
        insert_todos(engine, total)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            rendered = calendar_result(conn, Quiet(), uid_domain="t", max_events=total)  # type: ignore[arg-type]
            assert rendered.text().count("BEGIN:VEVENT") == total
            with pytest.raises(PermanentJobError, match="CALENDAR_MAX_EVENTS"):
                calendar_result(conn, Quiet(), uid_domain="t", max_events=total - 1)  # type: ignore[arg-type]


# --- The door's corners (found in review) -------------------------------------------------


def test_a_doubled_slash_does_not_walk_past_the_key_check(database_url, engine):
    from api.keys import key_hash

    with app_client(database_url, API_KEYS=f"k:{key_hash('secret-key')}") as client:
        for path in ("/api/v1/jobs", "/api/v1//jobs", "/api/v1/jobs/", "/api/v1/todos//ical"):
            method = "POST" if path.endswith("ical") else "GET"
            answer = client.request(method, path)
            assert answer.status_code == 401, path
        authorised = client.get("/api/v1//jobs", headers={"Authorization": "Bearer secret-key"})
        assert authorised.status_code == 200


def test_cors_is_off_unless_configured_and_refusals_carry_it_when_on(database_url, engine):
    from api.keys import key_hash

    page = "https://page.example"
    with app_client(database_url) as client:
        answer = client.get(TODOS, headers={"Origin": page})
        assert "access-control-allow-origin" not in answer.headers
    env = {"CORS_ALLOW_ORIGINS": page, "API_KEYS": f"k:{key_hash('secret-key')}"}
    with app_client(database_url, **env) as client:
        preflight = client.options(
            ICAL,
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == page
        refused = client.post(ICAL, headers={"Origin": page})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == page
        assert "Retry-After" in refused.headers["access-control-expose-headers"]
        other = client.post(ICAL, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_a_retry_of_a_missing_job_is_404_even_when_the_backlog_is_full(database_url, engine):
    insert_job(engine, status="PENDING")
    with app_client(database_url, JOBS_MAX_UNFINISHED="1") as client:
        assert client.post(f"/api/v1/jobs/{uuid.uuid4()}/retry").status_code == 404
        pending = insert_job(engine, status="PENDING")
        assert client.post(f"/api/v1/jobs/{pending}/retry").status_code == 409


def test_a_burst_wider_than_the_redis_pool_is_still_limited(database_url, engine):
    """More requests at once than the Redis client has connections: they wait for one,
    and are counted, rather than being taken for an outage and let through."""
    with app_client(database_url, RATE_LIMIT_WRITES_PER_MINUTE="10") as client:
        statuses = at_once(client, "POST", TODOS, 150, json={"title": "t"})
    assert statuses.count(201) == 10, statuses
    assert count(engine, "SELECT count(*) FROM todos") == 10


def test_refusals_are_logged_one_in_a_hundred_and_say_so(database_url, engine):
    """A flood of 429s must not buy a log line each; every other answer keeps its line."""
    from structlog.testing import capture_logs

    with (
        app_client(database_url, RATE_LIMIT_WRITES_PER_MINUTE="1") as client,
        capture_logs() as logs,
    ):
        statuses = [client.post(TODOS, json={"title": "t"}).status_code for _ in range(251)]
    assert statuses == [201] + [429] * 250
    lines = [e for e in logs if e["event"] == "request"]
    assert [e["status"] for e in lines] == [201, 429, 429, 429]
    assert [e.get("sampled") for e in lines] == [None, 100, 100, 100]

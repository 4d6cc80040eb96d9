"""The jobs console's routes: GET /api/v1/jobs/stats (counts, backlog, windows, failures) and
GET /api/v1/jobs/{id}/attempts, on Postgres and on SQLite (the zero-setup run)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from litestar.testing import TestClient
from sqlalchemy import Engine, insert

from api.app import create_app
from api.backlog import BacklogReader
from models import Job, JobAttempt, schema
from models.clock import utcnow
from models.engine import create_db_engine
from models.queue import build_broker, job_message
from models.settings import Settings
from tests.conftest import make_settings, make_sqs_settings
from tests.processes import free_port
from tests.waiting import wait_for

STATS = "/api/v1/jobs/stats"
JOBS = "/api/v1/jobs"


def ms(value: float) -> timedelta:
    return timedelta(milliseconds=value)


def add_job(
    conn: Any,
    status: str,
    created_at: datetime,
    *,
    finished_at: datetime | None = None,
    attempts: int = 0,
    error: str | None = None,
) -> uuid.UUID:
    job_id = uuid.uuid4()
    conn.execute(
        insert(Job).values(
            id=job_id,
            kind="ical",
            status=status,
            attempts=attempts,
            error=error,
            created_at=created_at,
            updated_at=created_at,
            finished_at=finished_at,
        )
    )
    return job_id


def add_attempt(
    conn: Any,
    job_id: uuid.UUID,
    attempt: int,
    started_at: datetime,
    run: timedelta,
    outcome: str,
    error: str | None = None,
) -> datetime:
    finished_at = started_at + run
    conn.execute(
        insert(JobAttempt).values(
            job_id=job_id,
            attempt=attempt,
            started_at=started_at,
            finished_at=finished_at,
            outcome=outcome,
            error=error,
            worker="host:1",
        )
    )
    return finished_at


def add_known_jobs(engine: Engine) -> dict[str, uuid.UUID]:
    """Jobs and attempts whose figures the tests know exactly (see the expected values)."""
    now = utcnow()
    with engine.begin() as conn:
        ids: dict[str, uuid.UUID] = {}
        # 2 minutes ago: waited 100 ms, ran 200 ms. (5m, 1h, 24h)
        created = now - timedelta(minutes=2)
        ids["recent_success"] = add_job(conn, "SUCCESS", created, finished_at=now, attempts=1)
        add_attempt(conn, ids["recent_success"], 1, created + ms(100), ms(200), "success")
        # 30 minutes ago: waited 300 ms, ran 400 ms and failed transiently, then 600 ms. (1h)
        created = now - timedelta(minutes=30)
        ids["retried_success"] = job = add_job(conn, "SUCCESS", created, attempts=2)
        end = add_attempt(conn, job, 1, created + ms(300), ms(400), "retry", "flaky")
        end = add_attempt(conn, job, 2, end + ms(1000), ms(600), "success")
        conn.execute(Job.__table__.update().where(Job.id == job).values(finished_at=end))
        # 2 hours ago: waited 500 ms, ran 1000 ms, failed for good. (24h)
        created = now - timedelta(hours=2)
        ids["failure"] = job = add_job(conn, "FAILURE", created, attempts=1, error="boom")
        end = add_attempt(conn, job, 1, created + ms(500), ms(1000), "failure", "boom")
        conn.execute(Job.__table__.update().where(Job.id == job).values(finished_at=end))
        # Cancelled while queued 10 s ago: no attempt. (5m, 1h, 24h)
        ids["cancelled"] = add_job(
            conn, "CANCELLED", now - timedelta(seconds=20), finished_at=now - timedelta(seconds=10)
        )
        # 25 hours ago: in no window, but still a recent failure.
        created = now - timedelta(hours=25)
        ids["old_failure"] = job = add_job(
            conn, "FAILURE", created, finished_at=created + ms(9000), attempts=1, error="old"
        )
        add_attempt(conn, job, 1, created + ms(7000), ms(2000), "failure", "old")
        # Unfinished: two queued, one running (no attempt ended), one waiting to retry whose
        # first attempt waited 50 ms and ran 100 ms 5 seconds ago. (5m, 1h, 24h)
        ids["pending"] = add_job(conn, "PENDING", now)
        add_job(conn, "PENDING", now)
        ids["running"] = add_job(conn, "STARTED", now - timedelta(seconds=3), attempts=1)
        created = now - timedelta(seconds=5)
        ids["retry"] = job = add_job(conn, "RETRY", created, attempts=1, error="flaky")
        add_attempt(conn, job, 1, created + ms(50), ms(100), "retry", "flaky")
    return ids


def window(stats: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [w for w in stats["windows"] if w["window"] == name]
    return found


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[tuple[TestClient, Engine]]:
    """The zero-setup configuration: a migrated SQLite file and the in-memory broker."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'taskoverflow.sqlite3'}",
            "BROKER_URL": "memory://",
            "LOG_FORMAT": "console",
        }
    )
    engine = create_db_engine(settings.database, application_name="tests")
    schema.upgrade(engine)
    with TestClient(create_app(settings), base_url="http://testserver.local") as client:
        yield client, engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_client(
    request: pytest.FixtureRequest, sqlite_client: tuple[TestClient, Engine]
) -> tuple[TestClient, Engine]:
    if request.param == "sqlite":
        return sqlite_client
    return request.getfixturevalue("client"), request.getfixturevalue("engine")


def test_stats_are_exact_on_both_databases(any_client: tuple[TestClient, Engine]):
    client, engine = any_client
    ids = add_known_jobs(engine)
    response = client.get(STATS)
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["unfinished"] == {"PENDING": 2, "STARTED": 1, "RETRY": 1}
    assert [w["window"] for w in stats["windows"]] == ["5m", "1h", "24h"]
    assert [w["seconds"] for w in stats["windows"]] == [300, 3600, 86400]
    # Percentiles interpolate between ranks (Postgres' percentile_cont; SQLite: the same in
    # Python): waits of first attempts, runs of every attempt that ended in the window.
    assert window(stats, "5m") == {
        "window": "5m",
        "seconds": 300,
        "finished": {"SUCCESS": 1, "FAILURE": 0, "CANCELLED": 1},
        "throughput_per_min": 0.4,
        "attempts_ended": 2,
        "queue_wait_ms": {"count": 2, "p50": 75.0, "p95": 97.5},  # 50, 100
        "run_ms": {"count": 2, "p50": 150.0, "p95": 195.0},  # 100, 200
    }
    assert window(stats, "1h") == {
        "window": "1h",
        "seconds": 3600,
        "finished": {"SUCCESS": 2, "FAILURE": 0, "CANCELLED": 1},
        "throughput_per_min": 0.05,
        "attempts_ended": 4,
        "queue_wait_ms": {"count": 3, "p50": 100.0, "p95": 280.0},  # 50, 100, 300
        "run_ms": {"count": 4, "p50": 300.0, "p95": 570.0},  # 100, 200, 400, 600
    }
    assert window(stats, "24h") == {
        "window": "24h",
        "seconds": 86400,
        "finished": {"SUCCESS": 2, "FAILURE": 1, "CANCELLED": 1},
        "throughput_per_min": round(4 / 1440, 4),
        "attempts_ended": 5,
        "queue_wait_ms": {"count": 4, "p50": 200.0, "p95": 470.0},  # 50, 100, 300, 500
        "run_ms": {"count": 5, "p50": 400.0, "p95": 920.0},  # 100 ... 600, 1000
    }
    failures = stats["recent_failures"]
    assert [(f["id"], f["error"], f["attempts"]) for f in failures] == [
        (str(ids["failure"]), "boom", 1),
        (str(ids["old_failure"]), "old", 1),
    ]
    assert failures[0]["url"] == f"http://testserver.local{JOBS}/{ids['failure']}"
    assert datetime.fromisoformat(failures[0]["finished_at"]) > datetime.fromisoformat(
        failures[1]["finished_at"]
    )
    assert [f["id"] for f in client.get(f"{STATS}?failures=1").json()["recent_failures"]] == [
        str(ids["failure"])
    ]
    assert client.get(f"{STATS}?failures=0").json()["recent_failures"] == []


def test_an_empty_database_has_zero_counts_and_no_percentiles(
    any_client: tuple[TestClient, Engine],
):
    client, _ = any_client
    stats = client.get(STATS).json()
    assert stats["unfinished"] == {"PENDING": 0, "STARTED": 0, "RETRY": 0}
    for each in stats["windows"]:
        assert each["finished"] == {"SUCCESS": 0, "FAILURE": 0, "CANCELLED": 0}
        assert (each["throughput_per_min"], each["attempts_ended"]) == (0, 0)
        assert each["queue_wait_ms"] == each["run_ms"] == {"count": 0, "p50": None, "p95": None}
    assert stats["recent_failures"] == []


def test_the_memory_broker_backlog_counts_its_queue(sqlite_client: tuple[TestClient, Engine]):
    """The zero-setup process's broker: nothing consumes it in this app, so sent jobs wait."""
    client, _ = sqlite_client
    for _ in range(3):
        assert client.post("/api/v1/todos/ical").status_code == 202
    stats = client.get(STATS).json()
    assert stats["backlog"] == {
        "broker": "memory",
        "queue": "ical",
        "ready": 3,
        "in_flight": 0,
        "delayed": 0,
        "dead_lettered": 0,
    }
    assert stats["backlog_error"] is None
    assert stats["unfinished"]["PENDING"] == 3


def test_the_redis_backlog_counts_ready_and_delayed_messages(
    client: TestClient, settings: Settings
):
    for _ in range(3):
        assert client.post("/api/v1/todos/ical").status_code == 202
    # A retry waiting out its backoff is a delayed message (Dramatiq's <queue>.DQ).
    broker = build_broker(settings.broker)
    broker.enqueue(job_message(settings.broker.queue_name, "ical", uuid.uuid4()), delay=60_000)
    stats = client.get(STATS).json()
    assert stats["backlog"] == {
        "broker": "redis",
        "queue": f"{settings.broker.namespace}:{settings.broker.queue_name}",
        "ready": 3,
        "in_flight": 0,
        "delayed": 1,
        "dead_lettered": 0,
    }
    # Read at most every 2 s: a fourth message shows once the reading is renewed.
    assert client.post("/api/v1/todos/ical").status_code == 202
    assert client.get(STATS).json()["backlog"]["ready"] == 3
    wait_for(
        lambda: client.get(STATS).json()["backlog"]["ready"],
        lambda ready: ready == 4,
        timeout=10,
        interval=0.25,
        what="the backlog reading to be renewed",
    )
    broker.flush_all()
    broker.close()


def test_the_sqs_backlog_reads_the_queue_attributes(database_url: str, sqs_endpoint: str):
    settings = make_sqs_settings(database_url, sqs_endpoint)
    with TestClient(create_app(settings)) as client:
        for _ in range(2):
            assert client.post("/api/v1/todos/ical").status_code == 202
        backlog = client.get(STATS).json()["backlog"]
    namespace = settings.broker.namespace
    assert backlog == {
        "broker": "sqs",
        "queue": f"{namespace}_ical",
        "ready": 2,
        "in_flight": 0,
        "delayed": 0,
        "dead_lettered": 0,
    }


def test_an_unreachable_broker_is_a_null_backlog_with_its_reason(database_url: str, engine: Engine):
    port = free_port()
    settings = make_settings(database_url, BROKER_URL=f"redis://127.0.0.1:{port}/0")
    add_known_jobs(engine)
    with TestClient(create_app(settings)) as client:
        response = client.get(STATS)
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["backlog"] is None
    # Said plainly; the client's own message (host and port) is for the log only.
    assert stats["backlog_error"] == "the broker could not be read"
    assert str(port) not in response.text
    assert stats["unfinished"] == {"PENDING": 2, "STARTED": 1, "RETRY": 1}  # the rest is there


@pytest.mark.parametrize("failures", ["-1", "51", "abc", "1.5", "", "999999"])
def test_a_bad_failures_count_is_400(client: TestClient, failures: str):
    response = client.get(f"{STATS}?failures={failures}")
    assert response.status_code == 400
    assert response.json() == {"error": "failures must be a whole number from 0 to 50"}


def test_stats_is_a_route_of_its_own_not_a_job_id(client: TestClient):
    """/jobs/stats is matched before /jobs/{job_id}; under it, "stats" is no job."""
    assert "windows" in client.get(STATS).json()
    for path in (f"{STATS}/attempts", f"{STATS}/events"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (404, {"error": "Job not found"})
    assert client.post(f"{STATS}/cancel").status_code == 404
    assert client.post(STATS).status_code == 405


def test_a_jobs_attempts_are_listed_oldest_first(any_client: tuple[TestClient, Engine]):
    client, engine = any_client
    ids = add_known_jobs(engine)
    response = client.get(f"{JOBS}/{ids['retried_success']}/attempts")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["job_id"], body["attempts_started"]) == (str(ids["retried_success"]), 2)
    assert [
        (a["attempt"], a["outcome"], a["error"], a["run_ms"], a["worker"]) for a in body["attempts"]
    ] == [(1, "retry", "flaky", 400, "host:1"), (2, "success", None, 600, "host:1")]
    first, second = (
        (datetime.fromisoformat(a["started_at"]), datetime.fromisoformat(a["finished_at"]))
        for a in body["attempts"]
    )
    assert first[1] - first[0] == ms(400)
    assert second[0] - first[1] == ms(1000)
    # Running: its attempt has not ended, so it is counted and not listed.
    running = client.get(f"{JOBS}/{ids['running']}/attempts").json()
    assert (running["attempts_started"], running["attempts"]) == (1, [])
    queued = client.get(f"{JOBS}/{ids['pending']}/attempts").json()
    assert (queued["attempts_started"], queued["attempts"]) == (0, [])


def test_attempts_of_an_unknown_job_are_404(client: TestClient):
    for job_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = client.get(f"{JOBS}/{job_id}/attempts")
        assert (response.status_code, response.json()) == (404, {"error": "Job not found"})


def test_both_routes_are_documented_with_examples(client: TestClient):
    schema_doc = client.get("/schema/openapi.json").json()
    stats = schema_doc["paths"][STATS]["get"]
    attempts = schema_doc["paths"][f"{JOBS}/{{job_id}}/attempts"]["get"]
    assert (stats["operationId"], attempts["operationId"]) == ("getJobStats", "getJobAttempts")
    assert set(stats["responses"]) >= {"200", "400", "503"}
    assert set(attempts["responses"]) >= {"200", "404", "503"}
    for operation in (stats, attempts):
        example = operation["responses"]["200"]["content"]["application/json"]["examples"]
        assert example["example"]["value"]


def test_a_hung_broker_read_blocks_no_thread_but_its_own(database_url: str):
    """A read that never returns: each reading gives up after its timeout, none starts a
    second thread beside the stuck one, and the loop's default executor (the job sends')
    never sees it."""
    release = threading.Event()
    calls: list[str] = []

    class Hung(BacklogReader):
        def __init__(self) -> None:
            super().__init__(StubBroker(), "q", cache_s=0, timeout_s=0.2)
            self._read = self.hang  # type: ignore[method-assign]

        def hang(self) -> Any:
            calls.append(threading.current_thread().name)
            release.wait(10)
            raise RuntimeError("late")

    async def readings() -> list[str | None]:
        reader = Hung()
        return [(await reader.reading()).error for _ in range(3)]

    try:
        errors = asyncio.run(readings())
    finally:
        release.set()
    assert errors == [
        "the broker did not answer within 0.2 s",
        "the last broker reading has not returned yet",
        "the last broker reading has not returned yet",
    ]
    assert calls == ["backlog-read"]

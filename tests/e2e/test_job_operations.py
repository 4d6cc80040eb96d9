"""The jobs resource over real processes, on Redis and on the SQS server: cancel (queued and
running), retry of a failure, Idempotency-Key, result expiry, paging during inserts, and the
event stream. Every test runs once per broker: none of it may depend on a broker feature.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.integration.jobs import SLOW_CALENDAR_TODOS, insert_todos, job_row
from tests.processes import Process, free_port, start_api, start_worker
from tests.waiting import wait_for, wait_for_job

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["redis", "sqs"])
def broker_env(request: pytest.FixtureRequest, service_env: dict[str, str]) -> dict[str, str]:
    """The processes' environment for each broker (the SQS server started only for sqs)."""
    if request.param == "redis":
        return service_env
    endpoint = request.getfixturevalue("sqs_endpoint")
    return {
        **service_env,
        "BROKER_URL": "sqs://",
        "SQS_ENDPOINT_URL": endpoint,
        "SQS_CREATE_QUEUES": "true",
        "SQS_WAIT_TIME_S": "1",
        # Each test's own queue: the SQS server lives for the whole session.
        "QUEUE_NAME": f"ops-{uuid.uuid4().hex[:8]}",
    }


def _api(env: dict[str, str], processes: list[Process], **overrides: str) -> httpx.Client:
    port = free_port()
    processes.append(start_api({**env, **overrides}, port))
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15)


@pytest.fixture
def client(broker_env: dict[str, str], processes: list[Process]) -> Iterator[httpx.Client]:
    # Some tests queue more jobs than one client may have unfinished by default (50), with
    # no worker to finish them: the limit is not what they are about.
    with _api(broker_env, processes, JOBS_MAX_UNFINISHED_PER_CLIENT="1000") as client:
        yield client


def _submit(client: httpx.Client, **headers: str) -> dict[str, Any]:
    response = client.post("/api/v1/todos/ical", headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_status(client: httpx.Client, job_id: str, wanted: set[str], timeout: float = 60) -> dict:
    return wait_for(
        lambda: _job(client, job_id),
        lambda job: job["status"] in wanted,
        timeout=timeout,
        what=f"job {job_id} to be {'/'.join(sorted(wanted))}",
    )


def test_a_queued_job_is_cancelled_at_once_and_its_message_dropped(
    client: httpx.Client, broker_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """No worker yet: the job waits in the queue. Cancel: CANCELLED at once (200). Then a
    worker starts, receives the message, and drops it: the job never runs."""
    task = _submit(client)
    cancelled = client.post(f"/api/v1/jobs/{task['task_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"

    processes.append(start_worker(broker_env))
    # The next job runs, so the worker has taken the cancelled one's message before it
    # (one queue, one thread would see them in order; both threads are free).
    after = _submit(client)
    assert _wait_status(client, after["task_id"], {"SUCCESS"})["status"] == "SUCCESS"
    row = job_row(engine, uuid.UUID(task["task_id"]))
    assert (row.status, row.attempts, row.result, row.started_at) == ("CANCELLED", 0, None, None)
    # The course's status route shows it in the states its clients know.
    status = client.get(f"/api/v1/todos/ical/{task['task_id']}/status").json()
    assert (status["task_status"], status["job_status"]) == ("FAILURE", "CANCELLED")
    # Finished: a second cancel is a conflict.
    again = client.post(f"/api/v1/jobs/{task['task_id']}/cancel")
    assert again.status_code == 409, again.text


def test_a_running_600000_todo_job_stops_within_2_s_and_the_worker_takes_the_next(
    client: httpx.Client, broker_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """One worker thread, busy on a 600,000-todo calendar. Cancel (202): the job ends
    CANCELLED within 2 s with no result, and that same thread then runs the next job."""
    insert_todos(engine, SLOW_CALENDAR_TODOS)
    processes.append(start_worker(broker_env, threads=1))
    task = _submit(client)
    # Running, and far enough in to have reported progress: the cancel lands mid-render.
    running = wait_for(
        lambda: _job(client, task["task_id"]),
        lambda job: job["status"] == "STARTED" and job["progress"] is not None,
        timeout=60,
        what="the big job to report progress",
    )
    assert running["progress"]["total"] == SLOW_CALENDAR_TODOS, running

    asked = time.monotonic()
    response = client.post(f"/api/v1/jobs/{task['task_id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True
    assert response.headers["location"].endswith(f"/api/v1/jobs/{task['task_id']}")
    row = wait_for_job(engine, uuid.UUID(task["task_id"]), {"CANCELLED", "SUCCESS"}, timeout=10)
    elapsed = time.monotonic() - asked
    assert row.status == "CANCELLED", row
    assert row.result is None
    assert elapsed < 2, f"cancelled {elapsed:.2f} s after the request"
    print(f"\n{broker_env['BROKER_URL']}: running job CANCELLED {elapsed:.2f} s after the request")

    with engine.begin() as conn:  # the next calendar is small
        conn.execute(text("DELETE FROM todos"))
    after = _submit(client)
    assert _wait_status(client, after["task_id"], {"SUCCESS"}, timeout=30)["attempts"] == 1


def _unreachable_broker(env: dict[str, str]) -> dict[str, str]:
    """``env`` with its broker pointed at a port where nothing listens."""
    dead = f"127.0.0.1:{free_port()}"
    if env["BROKER_URL"].startswith("sqs://"):
        return {**env, "SQS_ENDPOINT_URL": f"http://{dead}", "BROKER_SEND_TIMEOUT_S": "2"}
    return {**env, "BROKER_URL": f"redis://{dead}/0", "BROKER_SEND_TIMEOUT_S": "2"}


def test_a_failed_job_is_retried_as_a_new_job_linked_to_it(
    client: httpx.Client, broker_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """A real failure: submitted through an API that cannot reach the broker, the job is
    FAILURE (and the answer 503). Retry through a healthy API: a new job, linked to the
    failed one, which succeeds; the failure stays on record; a second retry is refused."""
    processes.append(start_worker(broker_env))
    with _api(_unreachable_broker(broker_env), processes) as cut_off:
        refused = cut_off.post("/api/v1/todos/ical")
    assert refused.status_code == 503, refused.text
    with engine.connect() as conn:
        failed_id = str(conn.execute(text("SELECT id FROM jobs")).scalar_one())
    failed = _job(client, failed_id)
    assert failed["status"] == "FAILURE", failed
    assert failed["links"]["retry"].endswith(f"/api/v1/jobs/{failed_id}/retry")

    response = client.post(f"/api/v1/jobs/{failed_id}/retry")
    assert response.status_code == 202, response.text
    retry = response.json()
    assert retry["id"] != failed_id
    assert retry["retry_of"] == failed_id
    assert response.headers["location"].endswith(f"/api/v1/jobs/{retry['id']}")
    done = _wait_status(client, retry["id"], {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS", done
    calendar = client.get(done["links"]["result"])
    assert calendar.status_code == 200
    assert calendar.text.startswith("BEGIN:VCALENDAR")
    assert _job(client, failed_id)["status"] == "FAILURE"  # the failure stays

    again = client.post(f"/api/v1/jobs/{failed_id}/retry")
    assert again.status_code == 409, again.text
    assert retry["id"] in again.json()["error"]


def test_concurrent_duplicates_of_one_idempotency_key_make_one_job(
    client: httpx.Client, broker_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Twenty clients send the same submission with one key at once: one job exists, and
    every answer is that job (202, the same task_id) or "still in progress" (409); a retry
    after them all is the first answer replayed. The same key with a body is 422."""
    processes.append(start_worker(broker_env))
    key = str(uuid.uuid4())
    start = threading.Barrier(20)

    def send(_: int) -> httpx.Response:
        start.wait()
        return client.post("/api/v1/todos/ical", headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(send, range(20)))
    codes = sorted({a.status_code for a in answers})
    assert set(codes) <= {202, 409}, [(a.status_code, a.text) for a in answers]
    task_ids = {a.json()["task_id"] for a in answers if a.status_code == 202}
    assert len(task_ids) == 1, task_ids
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1

    replay = client.post("/api/v1/todos/ical", headers={"Idempotency-Key": key})
    assert replay.status_code == 202
    assert replay.json()["task_id"] in task_ids
    assert replay.headers["idempotent-replayed"] == "true"

    changed = client.post(
        "/api/v1/todos/ical",
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        content=b'{"other": "request"}',
    )
    assert changed.status_code == 422, changed.text
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1


def test_an_expired_result_is_410_gone(
    broker_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Results kept 2 s: fetched in time, 200; after, 410 on the course's result route (and
    the record still answers on the jobs resource, with its expiry)."""
    short = {**broker_env, "JOB_RESULT_TTL_S": "2"}
    processes.append(start_worker(short))
    with _api(short, processes) as client:
        task = _submit(client)
        done = _wait_status(client, task["task_id"], {"SUCCESS"})
        result_url = f"/api/v1/todos/ical/{task['task_id']}/result"
        fresh = client.get(result_url)
        expires = done["expires_at"]
        assert expires is not None
        time.sleep(2.2)
        gone = client.get(result_url)
        assert gone.status_code == 410, (fresh.status_code, gone.text)
        assert "expired" in gone.json()["error"]
        assert _job(client, task["task_id"])["expires_at"] == expires
    assert fresh.status_code == 200


def test_a_list_walk_returns_every_job_once_while_jobs_are_inserted(
    client: httpx.Client, engine: Engine
):
    """60 jobs exist; a walk in pages of 7 while another client submits 30 more: every one
    of the 60 exactly once (the new ones sort before the walk's first page)."""
    before = {_submit(client)["task_id"] for _ in range(60)}
    stop = threading.Event()
    added: list[str] = []

    def keep_submitting() -> None:
        while not stop.is_set() and len(added) < 30:
            added.append(_submit(client)["task_id"])

    inserter = threading.Thread(target=keep_submitting)
    inserter.start()
    seen: list[str] = []
    token: str | None = None
    try:
        while True:
            params = {"page_size": "7", **({"page_token": token} if token else {})}
            page = client.get("/api/v1/jobs", params=params).json()
            seen += [job["id"] for job in page["jobs"]]
            token = page["next_page_token"]
            if token is None:
                break
            time.sleep(0.05)  # let the inserter interleave
    finally:
        stop.set()
        inserter.join()
    walked = [job_id for job_id in seen if job_id in before]
    assert len(walked) == len(set(walked)) == 60
    assert added, "nothing was inserted during the walk"


def _events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the job's stream, until the server ends it."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.partition(":")[2])))
                name = "message"
    return events


def test_the_event_stream_delivers_started_progress_and_success_in_order(
    client: httpx.Client, broker_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """A 300,000-todo calendar (a second or two to render): the stream, opened while the
    job is queued, shows PENDING, STARTED, progress, SUCCESS in that order, then ends."""
    insert_todos(engine, SLOW_CALENDAR_TODOS // 2)
    task = _submit(client)  # no worker yet: the stream opens on a queued job
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(_events, client, task["task_id"])
        time.sleep(0.5)
        processes.append(start_worker(broker_env))
        events = stream.result(timeout=90)
    statuses = [data["status"] for _, data in events]
    assert (statuses[0], statuses[-1]) == ("PENDING", "SUCCESS"), statuses
    started = statuses.index("STARTED")
    progress = [i for i, (name, _) in enumerate(events) if name == "progress"]
    assert progress, [name for name, _ in events]
    assert started < progress[0] < len(events) - 1
    done = [events[i][1]["progress"]["done"] for i in progress]
    assert done == sorted(done), done

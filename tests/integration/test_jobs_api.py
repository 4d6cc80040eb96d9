"""The jobs resource (/api/v1/jobs): one job, the list with filters and keyset pages, and
the operations on a job: cancel and retry."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
import redis
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from models import lifecycle
from models.results import gzip_text
from models.settings import Settings
from tests.conftest import make_settings
from tests.integration.jobs import insert_job
from tests.waiting import wait_for
from tests.workers import redis_worker

JOBS = "/api/v1/jobs"
BASE = "http://testserver.local"


def walk(client: TestClient, query: str = "", between_pages=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Every job id of a walk through the pages, in order (``between_pages`` runs between)."""
    ids: list[str] = []
    token = None
    for _ in range(1000):
        url = f"{JOBS}?{query}" + (f"&page_token={token}" if token else "")
        page = client.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        ids.extend(job["id"] for job in body["jobs"])
        token = body["next_page_token"]
        if token is None:
            return ids
        if between_pages is not None:
            between_pages()
    raise AssertionError("the walk never ended")


def test_a_job_shows_its_state_timing_and_links(client: TestClient, settings: Settings):
    task = client.post("/api/v1/todos/ical").json()
    job_url = f"{JOBS}/{task['task_id']}"
    pending = client.get(job_url)
    assert pending.status_code == 200
    assert pending.headers["retry-after"] == "1"
    body = pending.json()
    assert {k: body[k] for k in ("id", "kind", "status", "attempts", "error")} == {
        "id": task["task_id"],
        "kind": "ical",
        "status": "PENDING",
        "attempts": 0,
        "error": None,
    }
    assert (body["started_at"], body["finished_at"], body["queue_wait_ms"], body["run_ms"]) == (
        None,
        None,
        None,
        None,
    )
    assert (body["progress"], body["cancel_requested"], body["retry_of"], body["expires_at"]) == (
        None,
        False,
        None,
        None,
    )
    assert body["result_bytes"] is None  # no result yet
    assert body["links"] == {
        "self": f"{BASE}{job_url}",
        "events": f"{BASE}{job_url}/events",
        "cancel": f"{BASE}{job_url}/cancel",
        "status": task["task_url"],
        "result": task["task_url"].replace("/status", "/result"),
    }
    with redis_worker(settings):
        done = wait_for(
            lambda: client.get(job_url),
            lambda r: r.json()["status"] == "SUCCESS",
            timeout=30,
            what="the job to succeed",
        )
    assert "retry-after" not in done.headers
    body = done.json()
    assert body["attempts"] == 1
    assert body["progress"] is None  # a finished job has no running attempt
    calendar = client.get(body["links"]["result"], headers={"Accept-Encoding": "identity"})
    assert body["result_bytes"] == len(calendar.content) > 0
    assert set(body["links"]) == {"self", "events", "status", "result"}  # SUCCESS: no actions
    created, started, finished = (
        datetime.fromisoformat(body[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert body["queue_wait_ms"] == round((started - created).total_seconds() * 1000)
    assert body["run_ms"] == round((finished - started).total_seconds() * 1000)
    # Kept for JOB_RESULT_TTL_S after it finished (the default: a day).
    assert datetime.fromisoformat(body["expires_at"]) - finished == settings.jobs.result_ttl


def test_unknown_and_malformed_job_ids_are_404(client: TestClient):
    for job_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = client.get(f"{JOBS}/{job_id}")
        assert (response.status_code, response.json()) == (404, {"error": "Job not found"})


def test_the_list_is_newest_first_and_filters_combine(client: TestClient, engine: Engine):
    old_failed = insert_job(engine, status="FAILURE", age_s=3600, attempts=3)
    old_done = insert_job(engine, status="SUCCESS", age_s=1800, attempts=1)
    new_pending = insert_job(engine, age_s=60)
    assert walk(client) == [str(new_pending), str(old_done), str(old_failed)]
    assert walk(client, "status=SUCCESS") == [str(old_done)]
    assert walk(client, "kind=ical&status=FAILURE") == [str(old_failed)]
    with engine.connect() as conn:
        middle = conn.execute(
            text("SELECT created_at FROM jobs WHERE id = :id"), {"id": old_done}
        ).scalar_one()
    assert walk(client, f"created_before={middle.isoformat()}") == [str(old_failed)]
    assert walk(client, f"created_after={middle.isoformat()}") == [str(new_pending)]


def test_a_walk_lists_every_job_once_while_jobs_are_being_created(
    client: TestClient, engine: Engine
):
    """Keyset pages: jobs created during the walk never shift or repeat the older ones."""
    existing = [insert_job(engine, age_s=1000 - i) for i in range(45)]
    # Five share one created_at, so a page boundary falls inside a tie (ordered by id).
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET created_at = (SELECT created_at FROM jobs WHERE id = :a)"
                " WHERE id = ANY(:ids)"
            ),
            {"a": existing[20], "ids": existing[18:23]},
        )
    created_meanwhile: list[str] = []

    def submit_one() -> None:
        created_meanwhile.append(client.post("/api/v1/todos/ical").json()["task_id"])

    ids = walk(client, "page_size=7", between_pages=submit_one)
    assert len(created_meanwhile) == 6
    assert sorted(ids) == sorted(str(job_id) for job_id in existing)
    assert len(ids) == len(set(ids))
    with engine.connect() as conn:
        order = conn.execute(
            text("SELECT id FROM jobs WHERE id = ANY(:ids) ORDER BY created_at DESC, id DESC"),
            {"ids": existing},
        ).scalars()
        assert ids == [str(job_id) for job_id in order]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "status=DONE",
            "status must be one of PENDING, STARTED, RETRY, SUCCESS, FAILURE, CANCELLED",
        ),
        ("kind=pdf", "kind must be one of ical"),
        ("page_size=0", "page_size must be a whole number from 1 to 100"),
        ("page_size=101", "page_size must be a whole number from 1 to 100"),
        ("page_size=ten", "page_size must be a whole number from 1 to 100"),
        ("page_size=%D9%A5", "page_size must be a whole number from 1 to 100"),
        (
            "created_after=yesterday",
            "created_after must be an ISO-8601 date-time such as 2024-01-31T09:00:00",
        ),
        (
            "page_token=bm90LWEtdG9rZW4",
            "page_token is not one this API gave out (use next_page_token)",
        ),
        ("page_token=%00", "page_token is not one this API gave out (use next_page_token)"),
    ],
)
def test_bad_list_parameters_are_400_saying_why(client: TestClient, query: str, message: str):
    response = client.get(f"{JOBS}?{query}")
    assert (response.status_code, response.json()) == (400, {"error": message})


def test_date_times_with_offsets_and_at_the_calendar_s_ends_are_accepted(
    client: TestClient, engine: Engine
):
    job_id = str(insert_job(engine, age_s=60))
    for query in (
        "created_after=0001-01-01T00:00:00%2B01:00",  # before year 1 in UTC: everything
        "created_before=9999-12-31T23:59:59-01:00",  # after year 9999 in UTC: everything
        "created_after=2000-01-01T00:00:00Z",
    ):
        assert walk(client, query) == [job_id], query


# --- Cancel -------------------------------------------------------------------------------


def _claim(engine: Engine, job_id: uuid.UUID) -> None:
    """A worker takes the job (STARTED), as workers.runner does."""
    with engine.begin() as conn:
        assert lifecycle.claim(conn, job_id) is not None


def _progress(engine: Engine, job_id: uuid.UUID, stage: str, done: int, total: int | None) -> bool:
    with engine.begin() as conn:
        return lifecycle.report(conn, job_id, stage, done, total)


def _fail(engine: Engine, job_id: uuid.UUID, settings: Settings) -> None:
    with engine.begin() as conn:
        assert lifecycle.fail(conn, job_id, "boom", final=True, keep=settings.jobs.result_ttl)


def queued_job_ids(settings: Settings) -> list[str]:
    """Job ids of the messages waiting on the test's Redis queue (Dramatiq keeps them in a
    hash next to the queue's list)."""
    broker = settings.broker
    client = redis.Redis.from_url(broker.url)
    try:
        raw = client.hvals(f"{broker.namespace}:{broker.queue_name}.msgs")
    finally:
        client.close()
    return [json.loads(message)["args"][0] for message in raw]


@pytest.mark.parametrize("status", ["PENDING", "RETRY"])
def test_cancelling_a_queued_job_is_200_and_cancels_it_at_once(
    client: TestClient, engine: Engine, settings: Settings, status: str
):
    job_id = insert_job(engine, status=status)
    response = client.post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["error"], job["cancel_requested"]) == (
        "CANCELLED",
        "cancelled on request",
        True,
    )
    finished = datetime.fromisoformat(job["finished_at"])
    assert datetime.fromisoformat(job["expires_at"]) - finished == settings.jobs.result_ttl
    # Finished: no cancel link any more, a retry link instead.
    assert job["links"]["retry"] == f"{BASE}{JOBS}/{job_id}/retry"
    assert "cancel" not in job["links"]
    assert client.get(f"{JOBS}/{job_id}").json() == job
    assert [j["id"] for j in client.get(f"{JOBS}?status=CANCELLED").json()["jobs"]] == [str(job_id)]


def test_cancelling_a_running_job_is_202_and_asks_its_worker_to_stop(
    client: TestClient, engine: Engine
):
    job_id = insert_job(engine)
    _claim(engine, job_id)
    for _ in range(2):  # asking again changes nothing and answers the same
        response = client.post(f"{JOBS}/{job_id}/cancel")
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"{BASE}{JOBS}/{job_id}"
        assert response.headers["retry-after"] == "1"
        job = response.json()
        assert (job["status"], job["cancel_requested"], job["finished_at"]) == (
            "STARTED",
            True,
            None,
        )
    # Its worker's next progress report learns it should stop.
    assert _progress(engine, job_id, "rendering", 1, 10) is False


@pytest.mark.parametrize("status", ["SUCCESS", "FAILURE", "CANCELLED"])
def test_cancelling_a_finished_job_is_409_and_changes_nothing(
    client: TestClient, engine: Engine, status: str
):
    job_id = insert_job(engine, status=status)
    before = client.get(f"{JOBS}/{job_id}").json()
    response = client.post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"].startswith(f"job is already {status}: ")
    assert client.get(f"{JOBS}/{job_id}").json() == before


def test_cancel_and_retry_of_unknown_jobs_are_404(client: TestClient):
    for job_id in (str(uuid.uuid4()), "not-a-uuid"):
        for action in ("cancel", "retry"):
            response = client.post(f"{JOBS}/{job_id}/{action}")
            assert (response.status_code, response.json()) == (404, {"error": "Job not found"})


# --- Retry --------------------------------------------------------------------------------


def test_retrying_a_failed_job_makes_a_new_linked_job_and_sends_it(
    client: TestClient, engine: Engine, settings: Settings
):
    failed = insert_job(engine)
    _fail(engine, failed, settings)
    before = client.get(f"{JOBS}/{failed}").json()
    assert before["links"]["retry"] == f"{BASE}{JOBS}/{failed}/retry"
    response = client.post(f"{JOBS}/{failed}/retry")
    assert response.status_code == 202, response.text
    retry = response.json()
    assert retry["id"] != str(failed)
    assert response.headers["location"] == retry["links"]["self"] == f"{BASE}{JOBS}/{retry['id']}"
    assert {k: retry[k] for k in ("kind", "status", "attempts", "error", "retry_of")} == {
        "kind": "ical",
        "status": "PENDING",
        "attempts": 0,
        "error": None,
        "retry_of": str(failed),
    }
    assert client.get(f"{JOBS}/{retry['id']}").json() == retry
    # Its message is on the queue, as a submission's would be.
    assert queued_job_ids(settings) == [retry["id"]]
    # The failure stays on record, unchanged: what a client saw of it is still true.
    assert client.get(f"{JOBS}/{failed}").json() == before


def test_a_retried_job_runs_on_a_worker(client: TestClient, engine: Engine, settings: Settings):
    cancelled = client.post("/api/v1/todos/ical").json()["task_id"]
    assert client.post(f"{JOBS}/{cancelled}/cancel").status_code == 200
    retry = client.post(f"{JOBS}/{cancelled}/retry").json()
    with redis_worker(settings):
        done = wait_for(
            lambda: client.get(f"{JOBS}/{retry['id']}").json(),
            lambda job: job["status"] == "SUCCESS",
            timeout=30,
            what="the retry to succeed",
        )
    assert done["retry_of"] == cancelled
    # The cancelled job's message was delivered too, and dropped: it stays CANCELLED.
    assert client.get(f"{JOBS}/{cancelled}").json()["status"] == "CANCELLED"


def test_a_job_is_retried_once_and_the_second_retry_names_the_first(
    client: TestClient, engine: Engine
):
    job_id = insert_job(engine, status="CANCELLED")
    first = client.post(f"{JOBS}/{job_id}/retry")
    assert first.status_code == 202
    again = client.post(f"{JOBS}/{job_id}/retry")
    assert again.status_code == 409
    assert first.json()["id"] in again.json()["error"]
    assert again.headers["location"] == first.headers["location"]
    with engine.connect() as conn:
        retries = conn.execute(
            text("SELECT count(*) FROM jobs WHERE retry_of = :id"), {"id": job_id}
        ).scalar_one()
    assert retries == 1


@pytest.mark.parametrize("status", ["SUCCESS", "PENDING", "STARTED", "RETRY"])
def test_only_failed_or_cancelled_jobs_can_be_retried(
    client: TestClient, engine: Engine, status: str
):
    job_id = insert_job(engine, status=status)
    response = client.post(f"{JOBS}/{job_id}/retry")
    assert response.status_code == 409
    assert response.json() == {
        "error": f"job is {status}: only a FAILURE or CANCELLED job can be retried"
    }
    assert "location" not in response.headers
    assert "retry" not in client.get(f"{JOBS}/{job_id}").json()["links"]


def test_a_retry_that_cannot_be_sent_is_503_and_recorded_as_failure(
    database_url: str, engine: Engine
):
    job_id = insert_job(engine, status="FAILURE")
    down = make_settings(
        database_url, BROKER_URL="redis://127.0.0.1:9/0", BROKER_SEND_TIMEOUT_S="1"
    )
    with TestClient(create_app(down)) as client:
        response = client.post(f"{JOBS}/{job_id}/retry")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"].startswith("job queue unavailable: the retry (job ")
    with engine.connect() as conn:
        status, error, expires_at = conn.execute(
            text("SELECT status, error, expires_at FROM jobs WHERE retry_of = :id"),
            {"id": job_id},
        ).one()
    assert (status, error) == (
        "FAILURE",
        "the job queue could not be reached when the job was retried",
    )
    assert expires_at is not None


# --- Progress and retention ---------------------------------------------------------------


def test_progress_shows_in_the_job_and_in_the_course_status(client: TestClient, engine: Engine):
    task = client.post("/api/v1/todos/ical").json()
    job_id = uuid.UUID(task["task_id"])
    _claim(engine, job_id)
    started = client.get(task["task_url"]).json()
    assert (started["task_status"], "progress" in started) == ("STARTED", False)  # none yet
    assert _progress(engine, job_id, "rendering", 1200, 5000) is True
    progress = {"stage": "rendering", "done": 1200, "total": 5000}
    assert client.get(f"{JOBS}/{job_id}").json()["progress"] == progress
    assert client.get(task["task_url"]).json() == {
        "task_id": str(job_id),
        "task_status": "STARTED",
        "result_url": task["task_url"].replace("/status", "/result"),
        "progress": progress,
    }
    _progress(engine, job_id, "counting", 7, None)  # the total not known yet
    assert client.get(f"{JOBS}/{job_id}").json()["progress"] == {
        "stage": "counting",
        "done": 7,
        "total": None,
    }


def test_a_cancelled_job_is_a_failure_to_the_course_clients(client: TestClient):
    task = client.post("/api/v1/todos/ical").json()
    assert client.post(f"{JOBS}/{task['task_id']}/cancel").status_code == 200
    result_url = task["task_url"].replace("/status", "/result")
    # The five states the course knows, and the real one in a field its clients ignore.
    assert client.get(task["task_url"]).json() == {
        "task_id": task["task_id"],
        "task_status": "FAILURE",
        "result_url": result_url,
        "reason": "cancelled on request",
        "job_status": "CANCELLED",
    }
    result = client.get(result_url)
    assert (result.status_code, result.json()) == (
        404,
        {"error": "Task failed: cancelled on request"},
    )


def test_an_expired_result_is_410_and_the_job_record_stays(
    client: TestClient, engine: Engine, settings: Settings
):
    task = client.post("/api/v1/todos/ical").json()
    job_id = uuid.UUID(task["task_id"])
    _claim(engine, job_id)
    with engine.begin() as conn:
        # A result whose time ran out a second ago (a day after it finished, by default).
        assert lifecycle.succeed(
            conn, job_id, gzip_text("BEGIN:VCALENDAR"), keep=timedelta(seconds=-1)
        )
    result = client.get(task["task_url"].replace("/status", "/result"))
    assert result.status_code == 410
    expires_at = client.get(f"{JOBS}/{job_id}").json()["expires_at"]
    assert result.json() == {
        "error": f"Task result expired at {expires_at}; results are kept for 1 day after the "
        "task finishes: start a new export"
    }
    # The record answers until its own, longer, time is up; the course status too.
    assert client.get(f"{JOBS}/{job_id}").json()["status"] == "SUCCESS"
    assert client.get(task["task_url"]).json()["task_status"] == "SUCCESS"
    # A purge drops the expired result; the answer stays the same.
    lifecycle.purge(engine, settings.jobs)
    assert client.get(task["task_url"].replace("/status", "/result")).json() == result.json()


def test_a_failure_s_reason_expires_with_it(client: TestClient, engine: Engine):
    job_id = insert_job(engine)
    with engine.begin() as conn:
        assert lifecycle.fail(conn, job_id, "boom", final=True, keep=timedelta(seconds=-1))
    result = client.get(f"/api/v1/todos/ical/{job_id}/result")
    assert result.status_code == 410
    assert result.json()["error"].startswith("Task result expired at ")

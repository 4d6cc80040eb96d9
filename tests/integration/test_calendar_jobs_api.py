"""Calendar jobs through the API: submission, status, result, broker failure (real services)."""

from __future__ import annotations

import uuid

import icalendar
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from models.settings import Settings
from tests.conftest import make_settings
from tests.waiting import wait_for_task
from tests.workers import redis_worker

JOBS = "/api/v1/todos/ical"


def test_submission_is_202_with_absolute_task_url_and_location(client: TestClient, engine: Engine):
    """POST answers 202 {task_id, task_url}; Location = task_url; the row is PENDING."""
    response = client.post(JOBS)
    assert response.status_code == 202
    body = response.json()
    job_id = uuid.UUID(body["task_id"])
    assert body["task_url"] == f"http://testserver.local/api/v1/todos/ical/{job_id}/status"
    assert response.headers["location"] == body["task_url"]
    with engine.connect() as conn:
        status, enqueued = conn.execute(
            text("SELECT status, enqueued_at FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert status == "PENDING"
    assert enqueued is not None
    status = client.get(body["task_url"]).json()
    assert status == {
        "task_id": str(job_id),
        "task_status": "PENDING",
        "result_url": f"http://testserver.local/api/v1/todos/ical/{job_id}/result",
    }


def test_result_before_success_is_404_not_finished(client: TestClient):
    """A job that has not run yet has no result: 404 "Task not finished"."""
    task_url = client.post(JOBS).json()["task_url"]
    response = client.get(task_url.replace("/status", "/result"))
    assert response.status_code == 404
    assert response.json() == {"error": "Task not finished"}


def test_unknown_and_malformed_job_ids_are_404(client: TestClient):
    """The course's Celery said PENDING forever; we say the job does not exist."""
    for job_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        for leaf in ("status", "result"):
            response = client.get(f"{JOBS}/{job_id}/{leaf}")
            assert response.status_code == 404
            assert response.json() == {"error": "Task not found"}


def test_job_runs_on_a_real_redis_worker_and_serves_the_calendar(
    client: TestClient, settings: Settings
):
    """POST -> Redis -> worker -> SUCCESS; the result is text/calendar with the dated todos."""
    client.post(
        "/api/v1/todos",
        json={"title": "Dated; with, specials", "deadline_at": "2024-04-19T14:00:00"},
    )
    client.post("/api/v1/todos", json={"title": "Undated"})
    task_url = client.post(JOBS).json()["task_url"]
    with redis_worker(settings):
        status = wait_for_task(client.get, task_url, timeout=15)
    assert status["task_status"] == "SUCCESS", status
    result = client.get(status["result_url"])
    assert result.status_code == 200
    # The media type is the contract's; charset=utf-8 keeps browsers from guessing Latin-1.
    assert result.headers["content-type"] == "text/calendar; charset=utf-8"
    events = list(icalendar.Calendar.from_ical(result.text).walk("VEVENT"))
    assert [str(e["SUMMARY"]) for e in events] == ["Dated; with, specials"]


def test_broker_down_at_submission_is_503_and_leaves_no_waiting_job(
    database_url: str, engine: Engine
):
    """With the broker unreachable: 503 with a reason, and the job is FAILURE, not PENDING."""
    down = make_settings(
        database_url, BROKER_URL="redis://127.0.0.1:9/0", BROKER_SEND_TIMEOUT_S="1"
    )
    with TestClient(create_app(down)) as client:
        response = client.post(JOBS)
    assert response.status_code == 503
    assert response.json()["error"].startswith("job queue unavailable")
    assert response.headers["retry-after"] == "5"
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, error FROM jobs")).all()
    assert len(rows) == 1
    assert rows[0].status == "FAILURE"
    assert "job queue could not be reached" in rows[0].error


def test_public_base_url_names_the_job_urls(database_url: str, engine: Engine):
    """With PUBLIC_BASE_URL set (behind a load balancer), task_url, Location and result_url
    use it instead of the address the request came to."""
    public = make_settings(database_url, PUBLIC_BASE_URL="https://todos.example.org")
    with TestClient(create_app(public)) as client:
        response = client.post(JOBS)
        job_id = response.json()["task_id"]
        status = client.get(f"{JOBS}/{job_id}/status").json()
    base = f"https://todos.example.org/api/v1/todos/ical/{job_id}"
    assert response.json()["task_url"] == response.headers["location"] == f"{base}/status"
    assert status["result_url"] == f"{base}/result"


def test_the_documented_task_states_are_the_course_s_five(client: TestClient):
    """The schema promises the course's clients exactly the states they know (a cancelled
    job is shown as FAILURE), and schemathesis holds every answer to it."""
    schema = client.get("/schema/openapi.json").json()["components"]["schemas"]["TaskStatus"]
    assert schema["properties"]["task_status"]["enum"] == [
        "PENDING",
        "STARTED",
        "RETRY",
        "SUCCESS",
        "FAILURE",
    ]
    assert schema["required"] == ["result_url", "task_id", "task_status"]

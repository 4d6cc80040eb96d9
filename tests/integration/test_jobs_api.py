"""The jobs resource (/api/v1/jobs): one job, and the list with filters and keyset pages."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from models.settings import Settings
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
    assert body["links"] == {
        "self": f"{BASE}{job_url}",
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
    created, started, finished = (
        datetime.fromisoformat(body[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert body["queue_wait_ms"] == round((started - created).total_seconds() * 1000)
    assert body["run_ms"] == round((finished - started).total_seconds() * 1000)


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
        ("status=DONE", "status must be one of PENDING, STARTED, RETRY, SUCCESS, FAILURE"),
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

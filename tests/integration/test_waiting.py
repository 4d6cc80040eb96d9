"""tests.waiting's waits on jobs, against the real database and app."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from tests.integration.jobs import insert_job
from tests.waiting import WaitTimeout, wait_for_job, wait_for_task


def test_wait_for_job_returns_the_row_once_the_status_is_wanted(engine: Engine):
    job_id = insert_job(engine, status="RETRY", attempts=1)
    row = wait_for_job(engine, job_id, {"RETRY"}, timeout=1)
    assert (row.id, row.status, row.attempts) == (job_id, "RETRY", 1)


def test_wait_for_job_times_out_with_the_status_it_last_saw(engine: Engine):
    job_id = insert_job(engine, status="STARTED", attempts=2)
    wanted = rf"job {job_id} to be CANCELLED/FAILURE/SUCCESS"
    with pytest.raises(WaitTimeout, match=wanted) as caught:
        wait_for_job(engine, job_id, timeout=0.2)
    assert caught.value.last == ("STARTED", 2, None)


def test_wait_for_job_on_a_missing_job_says_so(engine: Engine):
    with pytest.raises(WaitTimeout, match="last seen: None"):
        wait_for_job(engine, uuid.uuid4(), timeout=0.1)


def test_wait_for_task_follows_the_status_route(client: TestClient, engine: Engine):
    """The status body once the job is final (here: set final in the database)."""
    task_url = client.post("/api/v1/todos/ical").json()["task_url"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'FAILURE', error = 'given up'"))
    body = wait_for_task(client.get, task_url, timeout=5)
    assert body["task_status"] == "FAILURE"


def test_wait_for_task_fails_at_once_on_a_4xx(client: TestClient):
    """An unknown job is 404 for good: no waiting out the timeout."""
    with pytest.raises(AssertionError, match="404"):
        wait_for_task(client.get, f"/api/v1/todos/ical/{uuid.uuid4()}/status", timeout=60)

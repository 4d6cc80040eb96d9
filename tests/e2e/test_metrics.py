"""Prometheus /metrics of the real API and of a real pool of three worker processes, and the
pool's CloudWatch EMF lines: after known work, every count is exact.

The work: SUCCESSES quick jobs; FAILURES jobs that fail every attempt (the todos table is
renamed away while they run: each read fails, a transient error, retried JOB_MAX_RETRIES=1
time, then FAILURE); CANCELLED large jobs, cancelled while they run. With one thread per
worker process the large jobs, running at the same time, run in different processes, so the
pool's sums are over several processes' files (each process takes one message at a time).
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from tests.integration.jobs import SLOW_CALENDAR_TODOS, insert_todos
from tests.processes import Process, free_port, start_api, start_worker, wait_log
from tests.waiting import wait_for, wait_for_job
from workers import metrics as job_metrics

pytestmark = pytest.mark.e2e

SUCCESSES, FAILURES, CANCELLED = 12, 3, 2
#: JOB_MAX_RETRIES=1: each failing job has two attempts.
FAILING_ATTEMPTS = 2
PROCESSES = 3
KIND = "ical"

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels`` (0 if there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


@pytest.fixture
def env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "JOB_MAX_RETRIES": "1",
        "JOB_MIN_BACKOFF_MS": "50",
        "JOB_MAX_BACKOFF_MS": "100",
        "WORKER_METRICS_PORT": str(free_port()),
        "METRICS_EMF": "true",
        "METRICS_NAMESPACE": "TaskOverflow/test",
        # Dramatiq's own knob: a process holds no message beyond the one its thread runs,
        # so jobs queued side by side go to different processes.
        "dramatiq_queue_prefetch": "1",
    }


@pytest.fixture
def client(env: dict[str, str], processes: list[Process]) -> Iterator[httpx.Client]:
    port = free_port()
    processes.append(start_api(env, port))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
        yield client


def submit(client: httpx.Client, count: int) -> list[uuid.UUID]:
    """``count`` jobs submitted at once (so they queue side by side)."""

    def one(_: int) -> uuid.UUID:
        response = client.post("/api/v1/todos/ical")
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["task_id"])

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def emf_events(worker: Process) -> list[dict]:
    return [json.loads(line) for line in worker.log().splitlines() if line.startswith('{"_aws"')]


def test_metrics_count_every_attempt_job_and_request_exactly(
    client: httpx.Client, env: dict[str, str], engine: Engine, processes: list[Process]
):
    worker = start_worker(env, processes=PROCESSES, threads=1)
    processes.append(worker)
    pool_metrics = f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"
    wait_log(worker, "worker metrics served")

    insert_todos(engine, 3)
    for job_id in submit(client, SUCCESSES):
        assert wait_for_job(engine, job_id).status == "SUCCESS"
        status = client.get(f"/api/v1/todos/ical/{job_id}/status")
        assert status.json()["task_status"] == "SUCCESS"

    # Every read of the todos fails while the table is away: transient errors, retried once.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE todos RENAME TO todos_away"))
    try:
        for job_id in submit(client, FAILURES):
            row = wait_for_job(engine, job_id)
            assert (row.status, row.attempts) == ("FAILURE", FAILING_ATTEMPTS), row.error
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE todos_away RENAME TO todos"))

    insert_todos(engine, SLOW_CALENDAR_TODOS)
    slow = submit(client, CANCELLED)
    for job_id in slow:  # all running at once, each far enough in to have written progress
        wait_for(
            lambda job_id=job_id: client.get(f"/api/v1/jobs/{job_id}").json(),
            lambda job: job["status"] == "STARTED" and job["progress"] is not None,
            timeout=60,
            what=f"job {job_id} to be running",
        )
    for job_id in slow:
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    for job_id in slow:
        assert wait_for_job(engine, job_id).status == "CANCELLED"
    with engine.connect() as conn:
        workers = conn.execute(
            text("SELECT DISTINCT worker FROM job_attempts WHERE outcome = 'cancelled'")
        ).scalars()
        assert len(set(workers)) == CANCELLED  # ran side by side, in different processes
    assert client.get("/api/v1/no-such-route").status_code == 404

    jobs = SUCCESSES + FAILURES + CANCELLED
    finished = "taskoverflow_jobs_finished_total"
    # A worker counts a job just after committing its end: wait for the last one's count.
    pool = wait_for(
        lambda: scrape(pool_metrics),
        lambda seen: value(seen, finished) >= jobs,
        timeout=10,
        what="the pool's metrics to count every job",
    )
    attempts = "taskoverflow_job_attempts_total"
    assert value(pool, attempts, kind=KIND, outcome="success") == SUCCESSES
    assert value(pool, attempts, kind=KIND, outcome="retry") == FAILURES * FAILING_ATTEMPTS
    assert value(pool, attempts, kind=KIND, outcome="cancelled") == CANCELLED
    assert value(pool, attempts, outcome="failure") == 0
    assert value(pool, finished, kind=KIND, status="SUCCESS") == SUCCESSES
    assert value(pool, finished, kind=KIND, status="FAILURE") == FAILURES
    assert value(pool, finished, kind=KIND, status="CANCELLED") == CANCELLED
    assert value(pool, "taskoverflow_job_queue_wait_seconds_count", kind=KIND) == jobs
    run_count = "taskoverflow_job_run_seconds_count"
    assert value(pool, run_count, outcome="success") == SUCCESSES
    assert value(pool, run_count, outcome="retry") == FAILURES * FAILING_ATTEMPTS
    assert value(pool, run_count, outcome="cancelled") == CANCELLED
    assert value(pool, "taskoverflow_job_attempts_used_count", kind=KIND) == jobs
    assert value(pool, "taskoverflow_job_attempts_used_sum", kind=KIND) == (
        SUCCESSES + FAILURES * FAILING_ATTEMPTS + CANCELLED
    )
    # The cancelled jobs ran for seconds: their run time says so, the quick ones' does not.
    assert value(pool, "taskoverflow_job_run_seconds_sum", outcome="cancelled") > 0.5

    api = scrape(f"{client.base_url}/metrics")
    requests = "taskoverflow_http_requests_total"
    submitted = SUCCESSES + FAILURES + CANCELLED
    assert value(api, requests, method="POST", route="/api/v1/todos/ical", status="202") == (
        submitted
    )
    assert value(
        api, requests, method="GET", route="/api/v1/todos/ical/{task_id}/status", status="200"
    ) == (SUCCESSES)
    assert value(api, requests, route="/api/v1/jobs/{job_id}/cancel", status="202") == CANCELLED
    assert value(api, requests, route="unmatched", status="404") == 1
    # Raw paths never become labels: no route label holds a job id.
    routes = {dict(labels).get("route", "") for _, labels in api}
    assert not [route for route in routes if UUID.search(route)]
    durations = "taskoverflow_http_request_duration_seconds_count"
    assert value(api, durations, method="POST", route="/api/v1/todos/ical") == submitted
    for status in ("PENDING", "STARTED", "RETRY"):
        assert value(api, "taskoverflow_jobs_unfinished", status=status) == 0
    assert value(api, "taskoverflow_metrics_source_up", source="database") == 1
    assert value(api, "taskoverflow_metrics_source_up", source="broker") == 1
    assert value(api, "taskoverflow_broker_messages", state="ready") == 0

    # The same attempts as CloudWatch EMF lines: one per ended attempt, one per exhausted job.
    events = wait_for(
        lambda: emf_events(worker),
        lambda seen: len(seen) >= SUCCESSES + FAILURES * (FAILING_ATTEMPTS + 1) + CANCELLED,
        timeout=10,
        what="an EMF line per attempt and per exhausted job",
    )
    by_outcome: dict[str, float] = {}
    by_status: dict[str, float] = {}
    for event in events:
        assert event["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TaskOverflow/test"
        if job_metrics.EMF_ATTEMPTS in event:
            outcome = event[job_metrics.DIM_OUTCOME]
            by_outcome[outcome] = by_outcome.get(outcome, 0) + event[job_metrics.EMF_ATTEMPTS]
        if job_metrics.EMF_JOBS_FINISHED in event:
            status = event[job_metrics.DIM_STATUS]
            by_status[status] = by_status.get(status, 0) + event[job_metrics.EMF_JOBS_FINISHED]
    assert by_outcome == {
        "success": SUCCESSES,
        "retry": FAILURES * FAILING_ATTEMPTS,
        "cancelled": CANCELLED,
    }
    assert by_status == {"SUCCESS": SUCCESSES, "FAILURE": FAILURES, "CANCELLED": CANCELLED}
    assert sum(job_metrics.EMF_QUEUE_WAIT_MS in event for event in events) == jobs

    # Dramatiq's reload (SIGHUP) replaces every worker process: the new ones add to the dead
    # ones' files, so nothing goes backwards, and one more job counts once.
    ready = worker.log().count("Worker process is ready")
    worker.popen.send_signal(signal.SIGHUP)
    wait_for(
        lambda: worker.log().count("Worker process is ready"),
        lambda seen: seen >= ready + PROCESSES,
        timeout=30,
        what="the reloaded pool's processes to be ready",
        details=worker.log,
    )
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE todos"))
    (again,) = submit(client, 1)
    assert wait_for_job(engine, again).status == "SUCCESS"
    after = wait_for(
        lambda: _scrape_or_none(pool_metrics),
        lambda seen: seen is not None and value(seen, finished) > jobs,
        timeout=30,
        what="the reloaded pool's /metrics to count the new job",
    )
    assert value(after, attempts, kind=KIND, outcome="success") == SUCCESSES + 1
    assert value(after, attempts, kind=KIND, outcome="retry") == FAILURES * FAILING_ATTEMPTS
    assert value(after, finished, status="CANCELLED") == CANCELLED


def _scrape_or_none(url: str) -> Samples | None:
    try:
        return scrape(url)
    except httpx.HTTPError:
        return None

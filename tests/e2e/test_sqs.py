"""Over SQS with three separate processes: moto server, the API and workers."""

from __future__ import annotations

import signal

import httpx
import icalendar
import pytest
from sqlalchemy import Engine

from tests.integration.jobs import SLOW_CALENDAR_TODOS, stop_worker_mid_job
from tests.processes import Process, free_port, start_api, start_worker
from tests.waiting import wait_for_task

pytestmark = pytest.mark.e2e


@pytest.fixture
def sqs_env(service_env: dict[str, str], sqs_endpoint: str) -> dict[str, str]:
    return {
        **service_env,
        "BROKER_URL": "sqs://",
        "SQS_ENDPOINT_URL": sqs_endpoint,
        "SQS_CREATE_QUEUES": "true",
        "SQS_WAIT_TIME_S": "1",
        # A killed worker's message comes back after the visibility timeout: keep it short.
        "JOB_TIME_LIMIT_MS": "8000",
        "SQS_VISIBILITY_TIMEOUT_S": "10",
    }


@pytest.fixture
def sqs_api(sqs_env: dict[str, str], processes: list[Process]) -> str:
    port = free_port()
    processes.append(start_api(sqs_env, port))
    return f"http://127.0.0.1:{port}"


def test_calendar_session_over_sqs(sqs_api: str, sqs_env: dict[str, str], processes: list[Process]):
    """The contract's curl session with the jobs travelling over SQS."""
    processes.append(start_worker(sqs_env))
    with httpx.Client(base_url=sqs_api, timeout=10) as client:
        for i in range(3):
            client.post(
                "/api/v1/todos",
                json={"title": f"SQS {i}", "deadline_at": f"2030-01-0{i + 1}T10:00:00"},
            )
        task = client.post("/api/v1/todos/ical").json()
        status = wait_for_task(client.get, task["task_url"])
        assert status["task_status"] == "SUCCESS", status
        result = client.get(status["result_url"])
    events = list(icalendar.Calendar.from_ical(result.content).walk("VEVENT"))
    assert sorted(str(e["SUMMARY"]) for e in events) == ["SQS 0", "SQS 1", "SQS 2"]


def test_sigkilled_worker_job_completes_after_the_visibility_timeout(
    sqs_api: str, sqs_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Kill -9 mid-job: SQS redelivers after the visibility timeout; a new worker finishes it."""
    handover = stop_worker_mid_job(
        sqs_api, sqs_env, engine, processes, signal.SIGKILL, todos=SLOW_CALENDAR_TODOS // 2
    )
    assert (handover.row.status, handover.row.attempts) == ("SUCCESS", 2)
    print(f"\nSQS: SIGKILL -> SUCCESS in {handover.seconds:.1f} s (visibility 10 s)")


def test_sigterm_mid_job_over_sqs_completes(
    sqs_api: str, sqs_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """SIGTERM mid-job: the worker exits cleanly and the job is finished or handed back."""
    handover = stop_worker_mid_job(
        sqs_api, sqs_env, engine, processes, signal.SIGTERM, todos=SLOW_CALENDAR_TODOS // 2
    )
    assert handover.exit_code == 0, handover.stopped.log()
    assert handover.row.status == "SUCCESS", handover.row.error

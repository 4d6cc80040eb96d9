"""The worker and API processes refuse unsafe configurations at start, with one clear line."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.processes import BIN
from tests.services import ADMIN_URL, REDIS_URL, ROOT

pytestmark = pytest.mark.e2e

ENV = {"DATABASE_URL": ADMIN_URL, "BROKER_URL": "sqs://"}


def run_worker(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    return subprocess.run(
        [str(BIN / "dramatiq"), "workers.main", "-p", "1", "-t", "1", "--skip-logging"],
        cwd=ROOT,
        env={**env, **ENV, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"JOB_MAX_BACKOFF_MS": "900001"},
            "taskoverflow worker: configuration error: JOB_MAX_BACKOFF_MS=900001 exceeds 900000 ms",
        ),
        (
            {"JOB_TIME_LIMIT_MS": "60000", "SQS_VISIBILITY_TIMEOUT_S": "60"},
            "taskoverflow worker: configuration error: SQS_VISIBILITY_TIMEOUT_S=60 must exceed "
            "the job time limit (60 s, JOB_TIME_LIMIT_MS)",
        ),
        ({"BROKER_URL": ""}, "taskoverflow worker: configuration error: BROKER_URL must be"),
    ],
)
def test_worker_refuses_unsafe_sqs_settings(extra: dict[str, str], message: str):
    """`dramatiq workers.main` exits non-zero naming the variable and the rule."""
    done = run_worker(extra)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_worker_refuses_missing_queues(sqs_endpoint: str):
    """Queues are Terraform's: without them (and without the dev switch) the worker stops."""
    done = run_worker({"SQS_ENDPOINT_URL": sqs_endpoint, "BROKER_NAMESPACE": "nothing_here"})
    assert done.returncode != 0
    assert "SQS queue 'nothing_here_ical' does not exist" in done.stdout + done.stderr


def test_api_refuses_to_start_without_database_url():
    """The API's factory stops uvicorn with a clear message when a required variable is unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    done = subprocess.run(
        [str(BIN / "uvicorn"), "--factory", "api.app:create_app_from_env", "--port", "0"],
        cwd=ROOT,
        env={**env, "BROKER_URL": REDIS_URL},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "taskoverflow api: configuration error: DATABASE_URL is not set" in done.stderr

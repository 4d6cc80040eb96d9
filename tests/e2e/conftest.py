"""End-to-end fixtures: the API and workers as real processes on the test database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.processes import Process, free_port, start_api

pytestmark = pytest.mark.e2e


@pytest.fixture
def service_env(database_url: str, redis_url: str, engine: Engine) -> dict[str, str]:
    """Environment for our processes: the test database (emptied) and a fresh namespace."""
    return {
        "DATABASE_URL": database_url,
        "BROKER_URL": redis_url,
        "BROKER_NAMESPACE": f"taskoverflow-e2e-{uuid.uuid4().hex[:8]}",
        "LOG_FORMAT": "json",
        # Crash recovery in seconds: a silent worker is presumed dead after 2 s and every
        # broker call checks for dead workers (production: 15 s and 5 %, see the README).
        "REDIS_HEARTBEAT_TIMEOUT_MS": "2000",
        "REDIS_MAINTENANCE_CHANCE": "1000000",
        "JOB_MAX_RETRIES": "3",
        "JOB_MIN_BACKOFF_MS": "100",
        "JOB_MAX_BACKOFF_MS": "1000",
    }


@pytest.fixture
def api(service_env: dict[str, str]) -> Iterator[str]:
    """A running API process; yields its base URL."""
    port = free_port()
    proc = start_api(service_env, port)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts; all stopped at the end whatever happened."""
    started: list[Process] = []
    yield started
    for proc in started:
        proc.stop()

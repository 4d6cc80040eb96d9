"""Fixtures shared by every layer: settings, a migrated test database, a Redis namespace,
moto, and the API as a real process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from models.engine import create_db_engine
from models.settings import Settings
from tests import services
from tests.processes import MotoServer, Process, fake_aws_credentials, free_port, start_api
from tests.services import describe, migrate, require_port, scratch_database


def pytest_report_header() -> str:
    """Which Postgres and Redis the run uses: the machine's, or private ones started for it
    (tests/services.py says how it chooses)."""
    return describe()


def make_settings(database_url: str, **overrides: str) -> Settings:
    """Settings as an entry point would read them, with test-friendly values."""
    environ = {
        "DATABASE_URL": database_url,
        "BROKER_URL": services.redis_url(),
        # A namespace per call keeps tests' queues apart on the one shared Redis.
        "BROKER_NAMESPACE": f"taskoverflow-test-{uuid.uuid4().hex[:8]}",
        "JOB_MAX_RETRIES": "2",
        "JOB_MIN_BACKOFF_MS": "50",
        "JOB_MAX_BACKOFF_MS": "200",
        "LOG_FORMAT": "console",
        **overrides,
    }
    return Settings.from_env(environ)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test run, built by ``alembic upgrade head``."""
    with scratch_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = services.redis_url()  # chosen on first use: unit tests need no services
    require_port(url, "Redis")
    return url


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the whole run. Credentials are fakes until the run
    ends (then the environment is as it was), so nothing in it can ever reach real AWS."""
    with fake_aws_credentials():
        server = MotoServer()
        yield server.url
        server.stop()


def make_sqs_settings(database_url: str, endpoint: str, **overrides: str) -> Settings:
    """Settings for the SQS broker on the local moto server, queues created on first use."""
    sqs = {
        "BROKER_URL": "sqs://",
        "SQS_ENDPOINT_URL": endpoint,
        "SQS_CREATE_QUEUES": "true",
        "SQS_WAIT_TIME_S": "1",
    }
    return make_settings(database_url, **{**sqs, **overrides})


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the test database; every test starts with empty tables."""
    engine = create_db_engine(settings.database, application_name="tests")
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE todos, jobs, job_attempts, idempotency_keys, rate_limits RESTART IDENTITY"
            )
        )
    yield engine
    engine.dispose()


# The API and workers as real processes, for the e2e and chaos layers.


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

"""Fixtures shared by every layer: settings, a migrated test database, a Redis namespace."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from models.database import create_db_engine
from models.settings import Settings
from tests.processes import MotoServer
from tests.services import REDIS_URL, migrate, require_port, scratch_database


def make_settings(database_url: str, **overrides: str) -> Settings:
    """Settings as an entry point would read them, with test-friendly values."""
    environ = {
        "DATABASE_URL": database_url,
        "BROKER_URL": REDIS_URL,
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
    require_port(REDIS_URL, "Redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the whole run. Credentials are fakes, so nothing
    in the test run can ever reach real AWS."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ[name] = value
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
        conn.execute(text("TRUNCATE todos, jobs RESTART IDENTITY"))
    yield engine
    engine.dispose()

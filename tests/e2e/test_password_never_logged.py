"""A database password written in DATABASE_URL appears in no log line and no error, whatever
the process and whatever goes wrong: the real API, worker launcher, worker, zero-setup
process and migrations, at LOG_LEVEL=DEBUG, in both log formats.

The machine's Postgres trusts local connections, so any password works: a distinctive one
makes every place it could surface searchable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine

from tests.integration.jobs import submit
from tests.processes import BIN, Process, free_port, start_api, start_worker, wait_log
from tests.services import ROOT
from tests.waiting import wait_for_job

pytestmark = pytest.mark.e2e

PASSWORD = "S3cretPw-xyz"  # noqa: S105 (the secret the test looks for)
STANDALONE = str(Path(ROOT, "ops", "dev", "standalone.py"))
FORMATS = pytest.mark.parametrize("log_format", ["json", "console"])


def with_password(url: str, *, port: int | None = None) -> str:
    """``url`` with PASSWORD written in it (and another port: one nothing listens on)."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}:{port or parts.port}"
    return parts._replace(netloc=netloc).geturl()


def unreachable(url: str) -> str:
    return with_password(url, port=free_port())


def run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A process run to its end, its environment ``env`` over this one's; stdout + stderr."""
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def alembic(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "alembic"), "upgrade", "head"], env)


def assert_never_shown(*outputs: str) -> None:
    for output in outputs:
        assert output, "a process logged nothing: the check would prove nothing"
        assert PASSWORD not in output, output


@FORMATS
def test_a_working_stack_never_logs_the_password(
    log_format: str, service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Migrations, the API, a worker running a calendar job, and the zero-setup process:
    the password reaches Postgres (it is the one they connect with) and no output."""
    env = {
        **service_env,
        "DATABASE_URL": with_password(service_env["DATABASE_URL"]),
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": log_format,
    }
    migrated = alembic(env)
    assert migrated.returncode == 0, migrated.stdout

    port = free_port()
    api = start_api(env, port)
    processes.append(api)
    worker = start_worker(env)
    processes.append(worker)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/v1/health/ready").status_code == 200
    created = httpx.post(f"{base}/api/v1/todos", json={"title": "secret-free"}, timeout=10)
    assert created.status_code == 201, created.text
    job_id = submit(base)
    assert wait_for_job(engine, job_id, timeout=30).status == "SUCCESS"
    wait_log(worker, "job finished")
    api.stop()
    worker.stop()

    standalone = Process(
        "standalone",
        [sys.executable, STANDALONE],
        {**env, "BROKER_URL": "memory://", "PORT": str(free_port())},
    )
    processes.append(standalone)
    wait_log(standalone, "TaskOverflow is up")
    standalone.stop(signal.SIGINT)

    # The zero-setup process shows which database it uses, without the password.
    assert "postgresql+psycopg2://postgres@127.0.0.1" in standalone.log()
    assert_never_shown(migrated.stdout, api.log(), worker.log(), standalone.log())


@FORMATS
def test_an_unreachable_database_never_logs_the_password(
    log_format: str, service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Connection failures, with their tracebacks: the API answering 503, a worker failing
    a job it cannot record and a reconciler pass, migrations and the zero-setup process
    failing at start."""
    good = {
        **service_env,
        "DATABASE_URL": with_password(service_env["DATABASE_URL"]),
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": log_format,
        "DB_CONNECT_TIMEOUT_S": "1",
        "RECONCILE_INTERVAL_S": "1",
    }
    bad = {**good, "DATABASE_URL": unreachable(service_env["DATABASE_URL"])}

    port = free_port()
    broken_api = start_api(bad, port)
    processes.append(broken_api)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/v1/health/ready", timeout=10).status_code == 503
    assert httpx.get(f"{base}/api/v1/todos", timeout=10).status_code == 503
    wait_log(broken_api, "database unavailable")
    broken_api.stop()

    # A job the API (on the database) submits reaches a worker that cannot connect to it.
    api_port = free_port()
    processes.append(start_api(good, api_port))
    broken_worker = start_worker(bad)
    processes.append(broken_worker)
    submit(f"http://127.0.0.1:{api_port}")
    wait_log(broken_worker, "Failed to process message")
    wait_log(broken_worker, "reconciler pass failed")
    broken_worker.stop()

    migrated = alembic(bad)
    assert migrated.returncode != 0
    assert "OperationalError" in migrated.stdout, migrated.stdout
    standalone = run([sys.executable, STANDALONE], {**bad, "BROKER_URL": "memory://"})
    assert standalone.returncode != 0
    assert "OperationalError" in standalone.stdout, standalone.stdout

    assert_never_shown(broken_api.log(), broken_worker.log(), migrated.stdout, standalone.stdout)


@pytest.mark.parametrize(
    ("query", "extra", "message"),
    [
        ("?sslmode=bogus", {}, "sslmode must be one of"),
        ("", {"BROKER_URL": f"amqp://app:{PASSWORD}@mq:5672/"}, "BROKER_URL must be a redis://"),
        ("", {"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE must be at least 1"),
    ],
)
def test_configuration_errors_never_show_the_password(
    query: str, extra: dict[str, str], message: str, database_url: str, redis_url: str
):
    """Every entry point refuses the configuration with one line naming the variable, and
    neither that line nor anything else shows the password."""
    env = {
        "DATABASE_URL": with_password(database_url) + query,
        "BROKER_URL": redis_url,
        "LOG_LEVEL": "DEBUG",
        **extra,
    }
    entry_points = {
        "api": [str(BIN / "uvicorn"), "--factory", "api.app:create_app_from_env", "--port", "0"],
        "worker launcher": [str(BIN / "python"), "-m", "workers"],
        "worker": [str(BIN / "dramatiq"), "workers.main", "-p", "1", "-t", "1", "--skip-logging"],
        "zero-setup": [sys.executable, STANDALONE],
    }
    if "BROKER_URL" not in extra:  # migrations read only the database settings
        entry_points["migrations"] = [str(BIN / "alembic"), "upgrade", "head"]
    for name, argv in entry_points.items():
        done = run(argv, env)
        assert done.returncode != 0, f"{name}: {done.stdout}"
        assert message in done.stdout, f"{name}: {done.stdout}"
        assert PASSWORD not in done.stdout, f"{name}: {done.stdout}"

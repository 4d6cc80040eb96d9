"""Faults 3 and 4 with real processes: the database goes away; the API dies after commit."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.integration.jobs import submit
from tests.processes import Process, free_port, start_api, start_worker
from tests.services import ADMIN_URL
from tests.waiting import wait_for, wait_for_job

pytestmark = pytest.mark.e2e


def database_name(engine: Engine) -> str:
    return str(engine.url.database)


def block_connections(engine: Engine, allowed: bool) -> None:
    """A real outage for one database: refuse new connections and end the open ones."""
    import psycopg2

    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        name = database_name(engine)
        cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
    conn.close()


def test_database_outage_is_503_and_nothing_is_lost(
    api: str, service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Database unreachable ~10 s: the API answers 503 with a reason, then recovers; every
    job submitted before the outage still ends SUCCESS."""
    processes.append(start_worker(service_env, threads=4))
    before = [submit(api) for _ in range(20)]
    engine.dispose()
    block_connections(engine, allowed=False)
    answers: list[tuple[int, dict]] = []  # type: ignore[type-arg]
    try:
        # Not a wait: every answer during the whole outage counts, so sample it for 10 s.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = httpx.get(f"{api}/api/v1/todos", timeout=15)
            answers.append((response.status_code, response.json()))
            time.sleep(0.5)
    finally:
        block_connections(engine, allowed=True)
    assert answers, "no request was answered during the outage"
    assert {status for status, _ in answers} == {503}, answers
    assert answers[-1][1] == {"error": "database unavailable, try again shortly"}

    wait_for(
        lambda: httpx.get(f"{api}/api/v1/todos", timeout=15).status_code,
        lambda status: status == 200,
        timeout=30,
        interval=0.5,
        what="the API to recover by itself after the outage",
    )
    for job_id in before:
        assert wait_for_job(engine, job_id, timeout=120).status == "SUCCESS"


def test_api_killed_between_commit_and_send_loses_no_job(
    service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """The API dies right after committing a job (before sending it): the reconciler finds
    the PENDING job and sends it, and it ends SUCCESS."""
    env = {**service_env, "RECONCILE_INTERVAL_S": "1", "RECONCILE_PENDING_AFTER_S": "3"}
    processes.append(start_worker(env))
    port = free_port()
    doomed = start_api({**env, "TASKOVERFLOW_FAULTS": "crash-after-commit"}, port)
    processes.append(doomed)
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{port}/api/v1/todos/ical", timeout=10)
    assert doomed.popen.wait(10) == 70
    with engine.connect() as conn:
        (job_id,) = conn.execute(text("SELECT id FROM jobs WHERE status = 'PENDING'")).scalars()
    assert wait_for_job(engine, uuid.UUID(str(job_id)), timeout=60).status == "SUCCESS"


def test_faults_are_refused_in_production():
    """The crash hook cannot be switched on in a production configuration."""
    from models.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="refused in production"):
        Settings.from_env(
            {
                "DATABASE_URL": "postgresql://u@h/d",
                "BROKER_URL": "redis://r:6379/0",
                "TASKOVERFLOW_ENV": "production",
                "TASKOVERFLOW_FAULTS": "crash-after-commit",
            }
        )

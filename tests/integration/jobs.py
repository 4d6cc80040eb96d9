"""Job rows and todos in the test database: making them and submitting jobs (waiting on
them: tests.waiting)."""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import httpx
from sqlalchemy import Engine, Row, select, text

from models import Job
from models.clock import utcnow
from tests.processes import Process, start_worker
from tests.waiting import wait_for_job


def insert_job(
    engine: Engine, *, status: str = "PENDING", age_s: float = 0, attempts: int = 0
) -> uuid.UUID:
    job_id = uuid.uuid4()
    at = utcnow() - timedelta(seconds=age_s)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, status, attempts, created_at, enqueued_at, updated_at)"
                " VALUES (:id, 'ical', :status, :attempts, :at, :at, :at)"
            ),
            {"id": job_id, "status": status, "attempts": attempts, "at": at},
        )
    return job_id


def job_row(engine: Engine, job_id: uuid.UUID):  # type: ignore[no-untyped-def]
    """The job's row, its result as text (the column's type decompresses it)."""
    with engine.connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.id == job_id)).one()


def insert_todos(
    engine: Engine, count: int, *, deadline: datetime | None = datetime(2030, 1, 1)
) -> None:
    """``count`` todos in one statement (generate_series), for big calendars."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO todos"
                " (title, description, completed, deadline_at, created_at, updated_at)"
                " SELECT 'Todo ' || i, 'about, todo; ' || i, false,"
                " CAST(:deadline AS timestamp) + i * interval '1 minute', now(), now()"
                " FROM generate_series(1, :count) AS i"
            ),
            {"deadline": deadline, "count": count},
        )


#: Enough todos that the job runs for seconds, time to interrupt it (~3 s since the calendar
#: path got faster; 300,000 took ~1.5 s, too close to the tests' reaction time).
SLOW_CALENDAR_TODOS = 600_000


def submit(api: str) -> uuid.UUID:
    """POST a calendar job to the API at ``api``; its id."""
    response = httpx.post(f"{api}/api/v1/todos/ical", timeout=10)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["task_id"])


def slow_job_running(
    api: str,
    env: dict[str, str],
    engine: Engine,
    processes: list[Process],
    *,
    todos: int = SLOW_CALENDAR_TODOS,
) -> tuple[Process, uuid.UUID]:
    """A worker process (appended to ``processes``) busy rendering a calendar of ``todos``
    todos: its job is STARTED in the database."""
    insert_todos(engine, todos)
    worker = start_worker(env)
    processes.append(worker)
    job_id = submit(api)
    wait_for_job(engine, job_id, {"STARTED"})
    return worker, job_id


class Handover(NamedTuple):
    """A job whose worker was stopped mid-job, finished by the next worker."""

    stopped: Process  # the worker stopped mid-job
    exit_code: int | None  # its exit status
    row: Row[Any]  # the job's, once final
    seconds: float  # from the worker's end to the job's


def stop_worker_mid_job(
    api: str,
    env: dict[str, str],
    engine: Engine,
    processes: list[Process],
    sig: signal.Signals,
    *,
    todos: int = SLOW_CALENDAR_TODOS,
    timeout: float = 60,
) -> Handover:
    """Stop a worker busy with a calendar of ``todos`` todos with ``sig`` (SIGKILL: a crash;
    SIGTERM: ECS stopping the task), start another (appended to ``processes``) and wait up to
    ``timeout`` s for the job to be final."""
    stopping, job_id = slow_job_running(api, env, engine, processes, todos=todos)
    exit_code = stopping.stop(sig, timeout=30)  # not gone by then: SIGKILLed, status not 0
    stopped_at = time.monotonic()
    processes.append(start_worker(env))
    row = wait_for_job(engine, job_id, timeout=timeout)
    return Handover(stopping, exit_code, row, time.monotonic() - stopped_at)

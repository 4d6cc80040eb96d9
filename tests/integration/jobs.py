"""Making job rows and todos directly in the test database."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Engine, text

from models.clock import utcnow


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
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).one()


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


def wait_final(engine: Engine, job_id: uuid.UUID, timeout: float = 30):  # type: ignore[no-untyped-def]
    """The job's row once it is SUCCESS or FAILURE; fails the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = job_row(engine, job_id)
        if row.status in ("SUCCESS", "FAILURE"):
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is still {job_row(engine, job_id).status}")

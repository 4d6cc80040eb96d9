"""Waiting in tests: one deadline-based poll loop, and the waits on jobs built on it.

Every wait in the suite goes through ``wait_for``: it has a deadline, and a wait that runs out
raises ``WaitTimeout`` naming what it waited for and the last state it saw, so a failure says
"job 3f… is STARTED, wanted SUCCESS/FAILURE" rather than hanging or asserting on a stale value.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine, Row, select, text

from models.job import FINAL_STATUSES, Job

T = TypeVar("T")

#: The statuses a job ends in (the course status route shows CANCELLED as FAILURE).
FINAL = frozenset(status.value for status in FINAL_STATUSES)

#: The longest last-seen value a timeout message shows (a calendar can be megabytes).
_SHOWN = 2000


class WaitTimeout(TimeoutError):
    """A wait ran out; ``last`` is the last value the probe returned."""

    def __init__(self, what: str, timeout: float, last: Any, details: str = "") -> None:
        self.what, self.timeout, self.last = what, timeout, last
        shown = repr(last)
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN] + f"... ({len(shown)} characters)"
        message = f"timed out after {timeout:g} s waiting for {what}; last seen: {shown}"
        super().__init__(message + (f"\n{details}" if details else ""))


def wait_for(
    probe: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until ``until(value)`` holds and return that value.

    The probe runs at least once, and once more at the deadline, so a slow probe cannot make
    the wait give up without looking. An exception from ``probe`` ends the wait at once (a
    probe raises to say "this will never happen", such as a process that exited). After
    ``timeout`` seconds: ``WaitTimeout`` with ``what``, the last value and ``details()``
    (a process's log, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, value, details() if details else "")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_for_job(
    engine: Engine,
    job_id: uuid.UUID,
    wanted: Collection[str] = FINAL,
    *,
    timeout: float = 60,
) -> Row[Any]:
    """The job's row (every column, the result as text) once its status is one of ``wanted``."""

    def state() -> tuple[str, int, str | None] | None:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT status, attempts, error FROM jobs WHERE id = :id"), {"id": job_id}
            ).one_or_none()
        return None if row is None else (row.status, row.attempts, row.error)

    wait_for(
        state,
        lambda seen: seen is not None and seen[0] in wanted,
        timeout=timeout,
        what=f"job {job_id} to be {'/'.join(sorted(wanted))} (status, attempts, error)",
    )
    with engine.connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.id == job_id)).one()


def wait_for_task(
    get: Callable[[str], httpx.Response],
    task_url: str,
    wanted: Collection[str] = FINAL,
    *,
    timeout: float = 30,
) -> dict[str, Any]:
    """The body of ``GET task_url`` (a job's status route) once its ``task_status`` is one of
    ``wanted``. ``get`` is any client's ``get``: ``httpx.get``, an ``httpx.Client``'s, or a
    Litestar ``TestClient``'s. A 4xx answer fails at once: it will not turn into a status."""

    def body() -> dict[str, Any]:
        response = get(task_url)
        if 400 <= response.status_code < 500:
            raise AssertionError(f"GET {task_url}: {response.status_code} {response.text[:500]}")
        if response.status_code != 200:  # a 503 in an outage, say: look again
            return {"http_status": response.status_code, "text": response.text[:500]}
        return dict(response.json())

    return wait_for(
        body,
        lambda seen: seen.get("task_status") in wanted,
        timeout=timeout,
        what=f"{task_url} to be {'/'.join(sorted(wanted))}",
    )

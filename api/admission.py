"""Quotas and backpressure: whether a new todo or job may be made, and the answer when not.

Each refusal names the limit (its setting), says what the client can do, and comes before
anything is written or queued:

- a todo beyond ``TODOS_MAX``: 409 (the list is full until some are deleted);
- a calendar export of more than ``CALENDAR_MAX_EVENTS`` events: 422 (the same request
  would fail again);
- a job while the client has ``JOBS_MAX_UNFINISHED_PER_CLIENT`` unfinished: 429 with
  Retry-After (the client's own jobs finishing makes room);
- a job while ``JOBS_MAX_UNFINISHED`` are unfinished overall: 503 with Retry-After
  (backpressure: the workers are behind, for everyone).

The todo count is one row kept by triggers (models.limits), locked by the insert itself
(queries.INSERT_TODO), so concurrent creations cannot overshoot. Job admission counts
unfinished jobs (partial indexes; at most the limit's worth of index entries) inside
``Database.serialised``, so a count below the limit is still below it when the job is
inserted, whichever API process admits it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    bindparam,
    func,
    literal_column,
    select,
    text,
)

from api.database import Database, Query, Transaction
from api.errors import ApiError
from models import Job, TodoCounts
from models.job import UNFINISHED_SQL
from models.settings import LimitSettings

#: Todos, and dated todos (a calendar's events).
TODO_COUNTS = Query(select(TodoCounts.todos, TodoCounts.dated))


def _unfinished_up_to(limit: str, *where: ColumnElement[bool]) -> ScalarSelect[int]:
    # The partial indexes' predicate, as literal SQL: a bound parameter would hide from the
    # planner that the query implies it, and the indexes would not be used.
    rows: Select[Any] = (
        select(literal_column("1"))
        .select_from(Job)
        .where(text(UNFINISHED_SQL), *where)
        .limit(bindparam(limit))
    )
    return select(func.count()).select_from(rows.subquery()).scalar_subquery()


#: Unfinished jobs, overall and :client's, each counted up to its limit only.
UNFINISHED_JOBS = Query(
    select(
        _unfinished_up_to("overall_max"),
        _unfinished_up_to("client_max", Job.client == bindparam("client", type_=Job.client.type)),
    )
)


def todos_full(limits: LimitSettings) -> ApiError:
    return ApiError(
        409,
        f"todo limit reached: the service holds at most {limits.todos_max} todos (TODOS_MAX); "
        "delete some before creating more",
    )


async def check_calendar_size(db: Database, limits: LimitSettings) -> None:
    """422 if a calendar of the todos as they stand would exceed ``CALENDAR_MAX_EVENTS``."""
    row = await db.fetch_one(TODO_COUNTS)
    events = 0 if row is None else row[1]
    if events > limits.calendar_max_events:
        raise ApiError(
            422,
            f"calendar too large: it would hold {events} events, more than "
            f"{limits.calendar_max_events} (CALENDAR_MAX_EVENTS); delete dated todos or "
            "clear their deadlines, then submit again",
        )


@asynccontextmanager
async def admitted_job(
    db: Database, limits: LimitSettings, client: str
) -> AsyncIterator[Transaction]:
    """A transaction to insert one new job of ``client``'s in, if the limits allow it; raises
    the refusal otherwise. Commits when the block ends: send the job's message after it."""
    retry_after = {"Retry-After": str(limits.backlog_retry_after_s)}
    async with db.serialised() as tx:
        row = await tx.fetch_one(
            UNFINISHED_JOBS,
            client=client,
            overall_max=limits.jobs_max_unfinished,
            client_max=limits.jobs_max_unfinished_per_client,
        )
        overall, mine = row if row is not None else (0, 0)
        if mine >= limits.jobs_max_unfinished_per_client:
            raise ApiError(
                429,
                f"too many unfinished jobs: this client has {mine} jobs pending or running, "
                f"the most allowed (JOBS_MAX_UNFINISHED_PER_CLIENT); retry once some finish",
                retry_after,
            )
        if overall >= limits.jobs_max_unfinished:
            raise ApiError(
                503,
                f"job backlog full: {overall} jobs are waiting or running, the most the "
                "workers are given (JOBS_MAX_UNFINISHED); retry later",
                retry_after,
            )
        yield tx

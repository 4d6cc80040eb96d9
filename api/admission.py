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
(queries.INSERT_TODO), so concurrent creations cannot overshoot. A job's insert asks
``job_admitted()`` (migration 0007), which takes the admissions' advisory lock and counts
unfinished jobs (partial indexes; at most the limit's worth of index entries) with the
lock held, so two API processes never both see room for the last job; all in the insert's
one round trip. The single process on SQLite makes the same decision in turns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    ScalarSelect,
    Select,
    bindparam,
    func,
    literal_column,
    select,
    text,
)

from api import queries
from api.database import Database, Query, Row
from api.errors import ApiError
from api.queries import JOB_COLUMNS
from models import Job, TodoCounts, lifecycle
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


def _admitted() -> ColumnElement[bool]:
    """Postgres: the limits' verdict on one more job of :client (migration 0007's
    ``job_admitted``, which also makes admissions take turns until the insert commits)."""
    return func.job_admitted(
        bindparam("overall_max", type_=Integer),
        bindparam("client", type_=Job.client.type),
        bindparam("client_max", type_=Integer),
        type_=Boolean,
    )


#: New jobs, inserted only if admitted: one round trip on Postgres.
SUBMIT_ADMITTED = Query(lifecycle.submit(_admitted()).returning(Job.id))
RETRY_ADMITTED = Query(lifecycle.retry(_admitted()).returning(*JOB_COLUMNS))


#: The same, for the single process (which takes turns instead: ``insert_job``).
_SUBMIT = Query(lifecycle.SUBMIT.returning(Job.id))


def _limits_params(limits: LimitSettings, client: str) -> dict[str, Any]:
    return {
        "client": client,
        "overall_max": limits.jobs_max_unfinished,
        "client_max": limits.jobs_max_unfinished_per_client,
    }


async def insert_job(
    db: Database, limits: LimitSettings, client: str, query: Query, **params: Any
) -> Row | None:
    """Run ``query`` (``SUBMIT_ADMITTED`` or ``RETRY_ADMITTED``) for one new job of
    ``client``'s if the limits allow it, committed when this returns (send the message
    after); raises the refusal otherwise. Its row, if it returns one (a retry can make
    nothing for reasons of its own: the caller's to say)."""
    verdict = _limits_params(limits, client)
    if db.is_postgres:
        for _ in range(3):
            row = await db.execute(query, **params, **verdict)
            if row is not None:
                return row
            overall, mine = await _counts(db, limits, client)  # which limit, for the answer
            if _full(limits, overall, mine):
                raise _refusal(limits, overall, mine)
            if query is RETRY_ADMITTED:
                return None  # not for the limits: the caller says why
            # A job finished between the refusal and the count: there is room, try again.
        raise _refusal(limits, overall, mine)
    # SQLite (the single process): the same decision, in turns, in one transaction.
    async with db.serialised() as tx:
        counts = await tx.fetch_one(UNFINISHED_JOBS, **verdict)
        overall, mine = (0, 0) if counts is None else (int(counts[0]), int(counts[1]))
        if _full(limits, overall, mine):
            raise _refusal(limits, overall, mine)
        plain = _SUBMIT if query is SUBMIT_ADMITTED else queries.RETRY_JOB
        return await tx.fetch_one(plain, **params, client=client)


async def _counts(db: Database, limits: LimitSettings, client: str) -> tuple[int, int]:
    row = await db.fetch_one(UNFINISHED_JOBS, **_limits_params(limits, client))
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _full(limits: LimitSettings, overall: int, mine: int) -> bool:
    return overall >= limits.jobs_max_unfinished or mine >= limits.jobs_max_unfinished_per_client


def _refusal(limits: LimitSettings, overall: int, mine: int) -> ApiError:
    retry_after = {"Retry-After": str(limits.backlog_retry_after_s)}
    if mine >= limits.jobs_max_unfinished_per_client:
        return ApiError(
            429,
            f"too many unfinished jobs: this client has {mine} jobs pending or running, "
            f"the most allowed (JOBS_MAX_UNFINISHED_PER_CLIENT); retry once some finish",
            retry_after,
        )
    # The overall limit (or, counted a moment after the refusal, room again: try again).
    return ApiError(
        503,
        f"job backlog full: {overall} jobs are waiting or running, the most the workers are "
        "given (JOBS_MAX_UNFINISHED); retry later",
        retry_after,
    )

"""Every SQL statement the API runs, as SQLAlchemy Core over the shared models (api.database).

Built once at import; a handler picks one and supplies its parameters by name. Column lists
match the response structs field for field, so a row becomes a ``TodoOut(*row)``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Uuid,
    bindparam,
    delete,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import aliased

from api.database import Query
from models import Job, Todo, TodoCounts, lifecycle

#: In ``TodoOut``'s field order.
TODO_COLUMNS = (
    Todo.id,
    Todo.title,
    Todo.description,
    Todo.completed,
    Todo.deadline_at,
    Todo.created_at,
    Todo.updated_at,
)

TODO_BY_ID = Query(select(*TODO_COLUMNS).where(Todo.id == bindparam("id")))

DELETE_TODO = Query(delete(Todo).where(Todo.id == bindparam("id")).returning(*TODO_COLUMNS))

#: The todo count's row while it is below :todos_max, locked (``FOR UPDATE``): a concurrent
#: creation waits, then sees the count this one's insert left (models.limits).
_ROOM = (
    select(TodoCounts.todos)
    .where(TodoCounts.todos < bindparam("todos_max", type_=BigInteger))
    .with_for_update()
    .cte("room")
)

#: A new todo if there is room for one (else no row: TODOS_MAX). Fields the body leaves out
#: take these values (the contract's defaults for a new todo).
INSERT_TODO = Query(
    insert(Todo)
    .from_select(
        ["title", "description", "completed", "deadline_at", "created_at", "updated_at"],
        select(
            bindparam("title", type_=Todo.title.type),
            bindparam("description", None, type_=Todo.description.type),
            bindparam("completed", False, type_=Todo.completed.type),
            bindparam("deadline_at", None, type_=Todo.deadline_at.type),
            bindparam("now", type_=Todo.created_at.type),
            bindparam("now", type_=Todo.updated_at.type),
        ).select_from(_ROOM),
    )
    .returning(*TODO_COLUMNS)
)


@cache
def todo_list(params: frozenset[str]) -> Query:
    """Newest first, by (created_at, id); each filter applies when its parameter is given:
    "completed" only completed = :completed, "due_by" only todos due by :due_by,
    "after_created_at" (with "after_id") only todos after that one in this order, "limit"
    at most :limit rows (api.todo_input.TodoPage names them)."""
    stmt = select(*TODO_COLUMNS).order_by(Todo.created_at.desc(), Todo.id.desc())
    if "completed" in params:
        stmt = stmt.where(Todo.completed == bindparam("completed"))
    if "due_by" in params:
        stmt = stmt.where(Todo.deadline_at <= bindparam("due_by"))
    if "after_created_at" in params:
        # A row comparison: an index condition on (created_at, id), so a deep page costs
        # what the first does (as the jobs list's, below).
        position = tuple_(
            bindparam("after_created_at", type_=Todo.created_at.type),
            bindparam("after_id", type_=Todo.id.type),
        )
        stmt = stmt.where(tuple_(Todo.created_at, Todo.id) < position)
    if "limit" in params:
        stmt = stmt.limit(bindparam("limit"))
    return Query(stmt)


@cache
def update_todo(fields: frozenset[str]) -> Query:
    """Set ``fields`` (each from the parameter of its name) and updated_at = :now."""
    values: dict[str, Any] = {name: bindparam(name) for name in sorted(fields)}
    return Query(
        update(Todo)
        .where(Todo.id == bindparam("id"))
        .values(**values, updated_at=bindparam("now"))
        .returning(*TODO_COLUMNS)
    )


#: Readiness: one round trip that needs a working connection (URL, TLS, password).
DATABASE_PING = Query(select(literal(1)))


#: In ``JobOut``'s field order as ``api.routes.jobs.job_out`` reads them (it adds the rest).
JOB_COLUMNS = (
    Job.id,
    Job.kind,
    Job.status,
    Job.attempts,
    Job.error,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.expires_at,
    Job.stage,
    Job.progress_done,
    Job.progress_total,
    Job.cancel_requested_at,
    Job.retry_of,
    Job.traceparent,
    Job.result_bytes,
)

#: One job as the jobs resource shows it (also what the events stream re-reads).
JOB_BY_ID = Query(select(*JOB_COLUMNS).where(Job.id == bindparam("id")))


# The job transitions the API makes (models.lifecycle owns them; here they only gain the
# columns the answer needs, so a transition and its answer are one statement).

#: Submit: a new PENDING job (:id, :kind, :now).
INSERT_JOB = Query(lifecycle.SUBMIT)
#: Its message could not be sent: FAILURE at once (:job_id, :error, :now, :expires_at).
FAIL_UNSENT_JOB = Query(lifecycle.FAIL_UNSENT)
#: Cancel (:job_id, :now, :expires_at): the job after it, or no row if missing or finished.
CANCEL_JOB = Query(lifecycle.CANCEL.returning(*JOB_COLUMNS))
#: Retry job :retry_of as the new job :id (:now): its kind then the new job's columns, or no
#: row if :retry_of is missing, not retryable or already retried.
RETRY_JOB = Query(lifecycle.RETRY.returning(*JOB_COLUMNS))

_retry = aliased(Job, name="retry")

#: Why a retry made nothing: the job's status and the id of its retry, if it has one.
RETRY_REFUSAL = Query(
    select(
        Job.status,
        select(_retry.id).where(_retry.retry_of == Job.id).scalar_subquery(),
    ).where(Job.id == bindparam("id"))
)

#: The course's status route: state, reason and the running attempt's progress.
JOB_STATUS = Query(
    select(Job.status, Job.error, Job.stage, Job.progress_done, Job.progress_total).where(
        Job.id == bindparam("id")
    )
)


@cache
def job_list(params: frozenset[str]) -> Query:
    """Newest first, at most :limit rows; each filter applies when its parameter is given
    (status, kind, created_after, created_before, after_created_at with after_id)."""
    stmt = select(*JOB_COLUMNS).order_by(Job.created_at.desc(), Job.id.desc())
    if "status" in params:
        stmt = stmt.where(Job.status == bindparam("status"))
    if "kind" in params:
        stmt = stmt.where(Job.kind == bindparam("kind"))
    if "created_after" in params:
        stmt = stmt.where(Job.created_at > bindparam("created_after"))
    if "created_before" in params:
        stmt = stmt.where(Job.created_at < bindparam("created_before"))
    if "after_created_at" in params:
        # A row comparison, which Postgres turns into an index condition on
        # (created_at, id): a deep page costs what the first does (an OR would filter).
        position = tuple_(bindparam("after_created_at"), bindparam("after_id", type_=Uuid))
        stmt = stmt.where(tuple_(Job.created_at, Job.id) < position)
    return Query(stmt.limit(bindparam("limit")))

"""Response bodies (msgspec structs: fast to encode, and documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class TodoOut(msgspec.Struct):
    """A todo as the course's clients know it; built positionally from a row of
    ``api.queries.TODO_COLUMNS``. Timestamps are naive UTC, which msgspec writes exactly as
    ``datetime.isoformat()`` does ("2023-02-27T00:00:00", no offset): the course's format."""

    id: int
    title: str
    description: str | None
    completed: bool
    deadline_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Health(msgspec.Struct):
    status: str


class TaskCreated(msgspec.Struct):
    task_id: str
    task_url: str


class TaskStatus(msgspec.Struct, omit_defaults=True):
    task_id: str
    #: PENDING, STARTED, RETRY, SUCCESS or FAILURE
    task_status: str
    result_url: str
    #: Why the job is RETRY or FAILURE (absent otherwise).
    reason: str | None = None

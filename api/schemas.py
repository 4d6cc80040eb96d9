"""Response bodies (msgspec structs: fast to encode, and documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from models import Todo


def iso(moment: datetime | None) -> str | None:
    # isoformat() is what the course's API returned: "2023-02-27T00:00:00", no offset (UTC).
    return None if moment is None else moment.isoformat()


class TodoOut(msgspec.Struct):
    id: int
    title: str
    description: str | None
    completed: bool
    deadline_at: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, todo: Todo | Any) -> TodoOut:
        """From a ``Todo`` or a row with the same attributes."""
        return cls(
            id=todo.id,
            title=todo.title,
            description=todo.description,
            completed=todo.completed,
            deadline_at=iso(todo.deadline_at),
            created_at=iso(todo.created_at) or "",
            updated_at=iso(todo.updated_at) or "",
        )


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

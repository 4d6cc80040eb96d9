"""The todo item, as the course's clients know it."""

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import utcnow

#: Limits from the public contract (docs/API.md); the API validates against them.
TITLE_MAX_LENGTH = 80
DESCRIPTION_MAX_LENGTH = 120


class Todo(Base):
    __tablename__ = "todos"
    __table_args__ = (
        # The calendar reads dated todos in (deadline_at, id) order: with id in the index
        # that order comes straight from it, no sort (migration 0003, docs/BENCHMARKS.md).
        Index("ix_todos_deadline_at_id", "deadline_at", "id"),
        # The list: newest first by (created_at, id), paged by keyset; and with ?completed=
        # the todos of that value in the same order (migration 0008).
        Index("ix_todos_created_at_id", "created_at", "id"),
        Index("ix_todos_completed_created_at_id", "completed", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH))
    completed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Naive UTC; NULL means "no deadline" (such todos are left out of the calendar).
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

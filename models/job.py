"""The asynchronous job record: the shared truth between the API and the workers."""

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import utcnow


class JobStatus(enum.StrEnum):
    """Lifecycle states; the names are the ones the course's Celery clients already know."""

    PENDING = "PENDING"  #: committed, sent (or about to be sent) to the broker
    STARTED = "STARTED"  #: a worker holds it
    RETRY = "RETRY"  #: the last attempt failed transiently; the broker will deliver it again
    SUCCESS = "SUCCESS"  #: result written
    FAILURE = "FAILURE"  #: permanently failed; ``error`` says why

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCESS, JobStatus.FAILURE)


class JobKind(enum.StrEnum):
    ICAL = "ical"


def _sql_in(enum_cls: type[enum.StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum_cls)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_sql_in(JobStatus)})", name="status"),
        CheckConstraint(f"kind IN ({_sql_in(JobKind)})", name="kind"),
        # The reconciler scans unfinished jobs by state and age.
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        # The jobs list: newest first, paged by (created_at, id).
        Index("ix_jobs_created_at_id", "created_at", "id"),
    )

    #: uuid4: unguessable, so a job id is also the capability to read its result.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.ICAL)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    #: How many times a worker has started it (1 on the first run).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The last failure, for people: why it is RETRY or FAILURE.
    error: Mapped[str | None] = mapped_column(Text)
    #: The job's output (for ``ical``: the calendar text).
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: Last time its message was handed to the broker; the reconciler re-sends from this.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

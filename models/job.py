"""The asynchronous job record: the shared truth between the API and the workers."""

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import utcnow
from models.results import GzipText


class JobStatus(enum.StrEnum):
    """Lifecycle states; the names are the ones the course's Celery clients already know."""

    PENDING = "PENDING"  #: committed, sent (or about to be sent) to the broker
    STARTED = "STARTED"  #: a worker holds it
    RETRY = "RETRY"  #: the last attempt failed transiently; the broker will deliver it again
    SUCCESS = "SUCCESS"  #: result written
    FAILURE = "FAILURE"  #: permanently failed; ``error`` says why
    CANCELLED = "CANCELLED"  #: stopped on request, before or while it ran; no result

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_queued(self) -> bool:
        """Waiting for a worker: cancelled at once, without one."""
        return self in (JobStatus.PENDING, JobStatus.RETRY)


#: A job in one of these never changes again (models.lifecycle guards every write).
FINAL_STATUSES = frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED})
#: A finished job that can be started again (as a new job linked to it: models.lifecycle).
RETRYABLE_STATUSES = frozenset({JobStatus.FAILURE, JobStatus.CANCELLED})


#: Not finished: what backpressure and the per-client quota count.
UNFINISHED_STATUSES = (JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY)
UNFINISHED_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in UNFINISHED_STATUSES))


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
        # ... and with ?status=, that state's jobs in the same order (migration 0008).
        Index("ix_jobs_status_created_at_id", "status", "created_at", "id"),
        # Retention (models.lifecycle.purge): finished jobs by age, to forget them; and
        # those still holding a result by expiry, to drop it (a partial index: the pass
        # reads only rows with a result left, not every expired one on every pass).
        Index("ix_jobs_finished_at", "finished_at"),
        Index(
            "ix_jobs_expires_at_with_result",
            "expires_at",
            postgresql_where=text("result IS NOT NULL"),
            sqlite_where=text("result IS NOT NULL"),
        ),
        # The limits (api.admission): unfinished jobs, all and each client's, counted
        # without reading finished ones.
        Index(
            "ix_jobs_unfinished_client",
            "client",
            postgresql_where=text(UNFINISHED_SQL),
            sqlite_where=text(UNFINISHED_SQL),
        ),
        Index(
            "ix_jobs_unfinished",
            "status",
            postgresql_where=text(UNFINISHED_SQL),
            sqlite_where=text(UNFINISHED_SQL),
        ),
        # A job is retried at most once: a second retry finds the first (and answers 409).
        UniqueConstraint("retry_of"),
    )

    #: uuid4: unguessable, so a job id is also the capability to read its result.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.ICAL)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    #: How many times a worker has started it (1 on the first run).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The last failure, for people: why it is RETRY or FAILURE.
    error: Mapped[str | None] = mapped_column(Text)
    #: The job's output (for ``ical``: the calendar text), stored as gzip (models.results):
    #: read and written as text through SQLAlchemy; the worker writes it, and the API serves
    #: it, as the compressed bytes.
    result: Mapped[str | None] = mapped_column(GzipText)
    #: The length of the result's text in bytes (its Content-Length once decompressed).
    result_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: Last time its message was handed to the broker; the reconciler re-sends from this.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    #: When the result (or the reason for no result) stops being served: set when the job
    #: finishes, finished_at + JOB_RESULT_TTL_S; the row itself goes JOB_RECORD_TTL_S after
    #: finishing. NULL while unfinished.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Progress of the running attempt, written by its worker at a bounded rate: what it is
    #: doing (``stage``) and how far (``progress_done`` of ``progress_total`` items).
    stage: Mapped[str | None] = mapped_column(String(32))
    progress_done: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    #: Someone asked to cancel it while it ran; its worker stops at its next progress write.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: The FAILURE or CANCELLED job this one retries (a retry is a new job: finished jobs
    #: never change). Not a foreign key: the original may be purged before its retry.
    retry_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: The W3C trace context (``traceparent``) of the request that submitted the job: the
    #: job's trace id, which its message carries to the worker and a resend carries again.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    #: Who submitted it (``ip:<address>`` or ``key:<name>``, api.access), for the per-client
    #: quota of unfinished jobs. NULL for jobs from before the limits.
    client: Mapped[str | None] = mapped_column(String(80))

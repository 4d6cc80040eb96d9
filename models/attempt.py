"""One ended attempt of a job: when it ran, how it ended, and where.

A job's row says how it stands now (its last attempt, its last error); these rows keep each
attempt, so the console can draw a job's timeline and measure queue wait and run time. The
worker writes one as each attempt ends (``models.lifecycle.record_attempt``); an attempt
whose worker died never ends and has no row (the console shows it as lost: the job's
``attempts`` counts it). They are deleted with their job.
"""

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class AttemptOutcome(enum.StrEnum):
    SUCCESS = "success"  #: the job's result was recorded
    RETRY = "retry"  #: failed transiently; the broker delivers the job again
    FAILURE = "failure"  #: failed for good
    CANCELLED = "cancelled"  #: stopped on request


class JobAttempt(Base):
    __tablename__ = "job_attempts"
    __table_args__ = (
        CheckConstraint(
            "outcome IN ({})".format(", ".join(f"'{o.value}'" for o in AttemptOutcome)),
            name="outcome",
        ),
        # The console's windows: attempts that ended in the last minutes, by their end.
        Index("ix_job_attempts_finished_at", "finished_at"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    #: 1 for the first attempt (the job's ``attempts`` when it was claimed).
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime] = mapped_column(DateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    #: Why it failed (RETRY, FAILURE) or stopped; NULL on success.
    error: Mapped[str | None] = mapped_column(Text)
    #: The worker that ran it: host and process id.
    worker: Mapped[str | None] = mapped_column(String(64))

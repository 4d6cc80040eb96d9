"""The SQL behind the jobs console (api.routes.console): counts, windows, failures, attempts.

Each is a SQLAlchemy Core statement run by ``api.database`` like every other API statement.
Every read is bounded by an index: unfinished jobs by ``ix_jobs_status_enqueued_at``
(status leads), finished ones by ``ix_jobs_finished_at``, ended attempts by
``ix_job_attempts_finished_at``, a job's attempts by their primary key.

Percentiles: Postgres computes them (``percentile_cont``, the same interpolation as
``statistics.quantiles(method="inclusive")``); SQLite (the zero-setup run) has no such
function, so there the window's durations are read (the newest ``SAMPLE_CAP`` at most) and
``percentile`` below computes the same figure in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    bindparam,
    case,
    cast,
    extract,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute

from api.database import Query
from models import Job, JobStatus
from models.attempt import JobAttempt
from models.job import UNFINISHED_SQL

#: The console's windows: name, length. Counts and percentiles are given for each.
WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("5m", timedelta(minutes=5)),
    ("1h", timedelta(hours=1)),
    ("24h", timedelta(hours=24)),
)
#: The widest window bounds every windowed read.
_WIDEST = WINDOWS[-1][0]
#: SQLite only: at most this many of the widest window's newest attempts are read to compute
#: percentiles in Python (the single process never comes near it; it bounds a request).
SAMPLE_CAP = 20_000

_Column = ColumnElement[Any] | InstrumentedAttribute[Any]

UNFINISHED = (JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY)
FINISHED = (JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED)


def since(window: str) -> str:
    """The name of the bound parameter that starts ``window`` (now - its length)."""
    return f"since_{window}"


def _in(window: str, column: _Column) -> ColumnElement[bool]:
    return column >= bindparam(since(window), type_=Job.finished_at.type)


#: Unfinished jobs by status: (status, count) for each status that has any.
UNFINISHED_COUNTS = Query(
    select(Job.status, func.count())
    .where(Job.status.in_([s.value for s in UNFINISHED]))
    .group_by(Job.status)
)

#: Jobs finished in each window, by final status: (status, count in each window...).
FINISHED_COUNTS = Query(
    select(
        Job.status,
        *(func.count().filter(_in(name, Job.finished_at)) for name, _ in WINDOWS),
    )
    .where(
        _in(_WIDEST, Job.finished_at),
        Job.status.in_([s.value for s in FINISHED]),
    )
    .group_by(Job.status)
)

_attempts_in_widest = (
    select()
    .select_from(JobAttempt)
    .join(Job, Job.id == JobAttempt.job_id)
    .where(_in(_WIDEST, JobAttempt.finished_at))
)

#: SQLite: attempts that ended in each window: (count in each window...).
ATTEMPT_COUNTS = Query(
    _attempts_in_widest.add_columns(
        *(func.count().filter(_in(name, JobAttempt.finished_at)) for name, _ in WINDOWS)
    )
)


def _ms(start: _Column, end: _Column) -> ColumnElement[float]:
    return cast(extract("epoch", end - start), Float) * 1000


# What a window's figures are over: each ended attempt's run, and the first attempt's wait in
# the queue (from the job's creation; later attempts wait out a backoff, not the queue).
_run_ms = _ms(JobAttempt.started_at, JobAttempt.finished_at)
_wait_ms = case((JobAttempt.attempt == 1, _ms(Job.created_at, JobAttempt.started_at)), else_=None)


def _percentiles(name: str) -> list[ColumnElement]:
    in_window = _in(name, JobAttempt.finished_at)
    first = and_(in_window, JobAttempt.attempt == 1)
    return [
        func.count().filter(in_window),
        func.count().filter(first),
        *(func.percentile_cont(p).within_group(_wait_ms).filter(first) for p in (0.5, 0.95)),
        *(func.percentile_cont(p).within_group(_run_ms).filter(in_window) for p in (0.5, 0.95)),
    ]


#: Postgres: per window, (attempts, first attempts, wait p50, wait p95, run p50, run p95), all
#: in one row (windows in WINDOWS order, six columns each). NULL percentiles for an empty window.
#: The jobs are bounded too: a job finishes as its last attempt ends (or later, cancelled), so
#: an attempt that ended in the window is one of a job that finished in it or has not
#: finished. Said so, the planner reads those jobs by index (ix_jobs_finished_at and the
#: unfinished partial index) rather than the whole table for a hash join (at a million jobs,
#: ~0.1 s instead of ~0.45 s; tests/integration/test_query_plans.py).
ATTEMPT_PERCENTILES_PG = Query(
    _attempts_in_widest.where(or_(_in(_WIDEST, Job.finished_at), text(UNFINISHED_SQL))).add_columns(
        *(c for name, _ in WINDOWS for c in _percentiles(name))
    )
)

#: SQLite: the widest window's newest attempts (at most :cap): attempt, created_at (of its
#: job), started_at, finished_at.
ATTEMPT_SAMPLE = Query(
    _attempts_in_widest.add_columns(
        JobAttempt.attempt, Job.created_at, JobAttempt.started_at, JobAttempt.finished_at
    )
    .order_by(JobAttempt.finished_at.desc())
    .limit(bindparam("cap"))
)

#: The newest FAILURE jobs (at most :limit): id, kind, error, attempts, created_at,
#: finished_at. Walks ix_jobs_finished_at backwards, skipping other states.
RECENT_FAILURES = Query(
    select(Job.id, Job.kind, Job.error, Job.attempts, Job.created_at, Job.finished_at)
    .where(Job.status == JobStatus.FAILURE.value, Job.finished_at.is_not(None))
    .order_by(Job.finished_at.desc(), Job.id.desc())
    .limit(bindparam("limit"))
)

#: A job's ended attempts, oldest first, after the job's attempts counter: one row per
#: attempt (attempt number NULL when it has none), no row if the job does not exist.
JOB_ATTEMPTS = Query(
    select(
        Job.attempts,
        JobAttempt.attempt,
        JobAttempt.started_at,
        JobAttempt.finished_at,
        JobAttempt.outcome,
        JobAttempt.error,
        JobAttempt.worker,
    )
    .select_from(Job)
    .outerjoin(JobAttempt, JobAttempt.job_id == Job.id)
    .where(Job.id == bindparam("id"))
    .order_by(JobAttempt.attempt)
)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Postgres's ``percentile_cont(p)`` of ``values`` (sorted ascending): linear
    interpolation between the two nearest ranks; None when there are none."""
    if not values:
        return None
    position = p * (len(values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(values) - 1)
    return values[lower] + (values[upper] - values[lower]) * (position - lower)

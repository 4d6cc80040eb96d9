"""Response bodies of the jobs console's routes (api.routes.console): a job's attempts and the
jobs' statistics. msgspec structs, as in api.schemas."""

from __future__ import annotations

from typing import Annotated

import msgspec

from api.schemas import NaiveUTC, NaiveUTCOrNull
from models.attempt import AttemptOutcome

Outcome = Annotated[
    str, msgspec.Meta(extra_json_schema={"extra": {"enum": [o.value for o in AttemptOutcome]}})
]
_COUNT = msgspec.Meta(ge=0)
Count = Annotated[int, _COUNT]


class AttemptOut(msgspec.Struct):
    """One ended attempt of a job (an attempt whose worker died never ends: no row)."""

    #: 1 for the first attempt.
    attempt: int
    started_at: NaiveUTC
    finished_at: NaiveUTC
    #: finished_at - started_at in milliseconds.
    run_ms: int
    #: success, retry, failure or cancelled.
    outcome: Outcome
    #: Why it failed or stopped; null on success.
    error: str | None
    #: The worker that ran it (host:pid).
    worker: str | None


class JobAttempts(msgspec.Struct):
    """A job's ended attempts, oldest first. ``attempts_started`` is the job's ``attempts``:
    a number up to it without a row is running (the job is STARTED and it is the last) or
    was lost with its worker."""

    job_id: str
    attempts_started: Count
    attempts: list[AttemptOut]


class UnfinishedCounts(msgspec.Struct):
    """Jobs waiting or running now."""

    PENDING: Count
    STARTED: Count
    RETRY: Count


class FinishedCounts(msgspec.Struct):
    """Jobs that finished within a window, by their final state."""

    SUCCESS: Count
    FAILURE: Count
    CANCELLED: Count


class Percentiles(msgspec.Struct):
    """Milliseconds over ``count`` values (p50/p95 null when there are none)."""

    count: Count
    p50: float | None
    p95: float | None


class WindowStats(msgspec.Struct):
    """The last ``seconds`` seconds: what finished, how fast, how long jobs waited and ran."""

    #: "5m", "1h" or "24h".
    window: str
    seconds: int
    finished: FinishedCounts
    #: Jobs finished per minute, averaged over the window.
    throughput_per_min: float
    #: Attempts that ended in the window (every outcome).
    attempts_ended: Count
    #: Creation to first start, over first attempts that ended in the window.
    queue_wait_ms: Percentiles
    #: Start to end, over every attempt that ended in the window.
    run_ms: Percentiles


class BacklogOut(msgspec.Struct):
    """Messages of the job queue in the broker (``api.backlog.BrokerDepth``)."""

    #: redis, sqs or memory.
    broker: str
    #: The broker's name of the queue.
    queue: str
    #: Waiting to be delivered.
    ready: Count
    #: Delivered to a worker, not yet acknowledged.
    in_flight: Count
    #: Waiting out a retry backoff.
    delayed: Count
    #: Given up by the broker (its dead-letter queue).
    dead_lettered: Count | None


class RecentFailure(msgspec.Struct):
    id: str
    kind: str
    error: str | None
    attempts: Count
    created_at: NaiveUTC
    finished_at: NaiveUTCOrNull
    #: The job in the jobs resource.
    url: str


class JobStats(msgspec.Struct):
    """The jobs console's figures, as of ``generated_at``."""

    generated_at: NaiveUTC
    unfinished: UnfinishedCounts
    #: Null when the broker could not be read (``backlog_error`` says why).
    backlog: BacklogOut | None
    backlog_error: str | None
    #: One per window, shortest first.
    windows: list[WindowStats]
    #: The newest FAILURE jobs, newest first.
    recent_failures: list[RecentFailure]

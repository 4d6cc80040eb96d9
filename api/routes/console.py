"""What the jobs console reads beyond the jobs resource: a job's attempts and the statistics.

``GET /api/v1/jobs/stats``: unfinished jobs by state, the broker's backlog, and per window
(5 minutes, 1 hour, 24 hours) the finished jobs by state, throughput, queue wait and run time
(p50/p95), and the newest failures. ``GET /api/v1/jobs/{job_id}/attempts``: a job's ended
attempts, from which (with the job) a client draws its timeline. docs/API.md has both.

The static ``/stats`` segment wins over ``/{job_id}`` in Litestar's routing, so it never
reads as a job id (tests/integration/test_console_api.py holds it to that).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath

from api import console_queries as queries
from api.backlog import BacklogReading, backlog_reader
from api.console_schemas import (
    AttemptOut,
    BacklogOut,
    FinishedCounts,
    JobAttempts,
    JobStats,
    Percentiles,
    RecentFailure,
    UnfinishedCounts,
    WindowStats,
)
from api.database import Database, Row
from api.errors import ApiError
from api.job_context import Jobs, parse_job_id
from api.openapi_docs import errors, query_param, with_links_and_examples
from models.clock import utcnow

#: Recent failures listed unless ``failures`` says otherwise, and the most it may say.
DEFAULT_FAILURES = 10
MAX_FAILURES = 50


def _ms(start: datetime, end: datetime) -> int:
    return round((end - start).total_seconds() * 1000)


def parse_failures(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_FAILURES
    if raw.isascii() and raw.isdigit() and len(raw) <= 3 and int(raw) <= MAX_FAILURES:
        return int(raw)
    raise ApiError(400, f"failures must be a whole number from 0 to {MAX_FAILURES}")


def _figure(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


async def _attempt_figures(
    db: Database, params: dict[str, datetime]
) -> list[tuple[int, Percentiles, Percentiles]]:
    """Per window (WINDOWS order): attempts ended, queue wait and run time percentiles."""
    if db.engine.dialect.name == "postgresql":
        # An aggregate without GROUP BY: exactly one row.
        (row,) = await db.fetch_all(queries.ATTEMPT_PERCENTILES_PG, **params)
        figures = []
        for index in range(len(queries.WINDOWS)):
            ended, first, wait50, wait95, run50, run95 = row[index * 6 : index * 6 + 6]
            wait = Percentiles(first, _figure(wait50), _figure(wait95))
            figures.append((ended, wait, Percentiles(ended, _figure(run50), _figure(run95))))
        return figures
    # SQLite has no percentile function: read the widest window's newest attempts (capped)
    # and compute each window's percentiles here; the counts stay exact.
    (counts,) = await db.fetch_all(queries.ATTEMPT_COUNTS, **params)
    widest = queries.since(queries.WINDOWS[-1][0])
    sample = await db.fetch_all(
        queries.ATTEMPT_SAMPLE, cap=queries.SAMPLE_CAP, **{widest: params[widest]}
    )
    return [
        (counts[index], *_sample_percentiles(sample, params[queries.since(name)]))
        for index, (name, _) in enumerate(queries.WINDOWS)
    ]


def _percentiles(values: list[float]) -> Percentiles:
    values.sort()
    p50, p95 = (_figure(queries.percentile(values, p)) for p in (0.5, 0.95))
    return Percentiles(len(values), p50, p95)


def _sample_percentiles(sample: Sequence[Row], start: datetime) -> tuple[Percentiles, Percentiles]:
    """Queue wait (first attempts) and run time over the attempts of ``sample`` that ended
    at ``start`` or later."""
    waits: list[float] = []
    runs: list[float] = []
    for attempt, created_at, started_at, finished_at in sample:
        if finished_at < start:
            continue
        runs.append((finished_at - started_at).total_seconds() * 1000)
        if attempt == 1:
            waits.append((started_at - created_at).total_seconds() * 1000)
    return _percentiles(waits), _percentiles(runs)


async def _reading(jobs: Jobs) -> BacklogReading:
    try:
        reader = backlog_reader(jobs.sender)
    except TypeError as exc:  # a broker with no way to count its messages: say so, no 500
        return BacklogReading(depth=None, error=str(exc), taken_at=0.0)
    return await reader.reading()


def _backlog(reading: BacklogReading) -> BacklogOut | None:
    depth = reading.depth
    if depth is None:
        return None
    return BacklogOut(
        broker=depth.broker,
        queue=depth.queue,
        ready=depth.ready,
        in_flight=depth.in_flight,
        delayed=depth.delayed,
        dead_lettered=depth.dead_lettered,
    )


async def job_stats(
    db: Database, backlog: Awaitable[BacklogReading], base_url: str, failures: int
) -> JobStats:
    """The statistics as of now; ``backlog`` (the broker's reading) is awaited alongside the
    database's statements."""
    now = utcnow()
    params = {queries.since(name): now - length for name, length in queries.WINDOWS}

    async def from_database() -> tuple[list[Row], list[Row], list[Any], list[Row]]:
        # One statement after another: a console's request holds one connection at a time.
        unfinished = await db.fetch_all(queries.UNFINISHED_COUNTS)
        finished = await db.fetch_all(queries.FINISHED_COUNTS, **params)
        attempts = await _attempt_figures(db, params)
        recent = await db.fetch_all(queries.RECENT_FAILURES, limit=failures) if failures else []
        return unfinished, finished, attempts, recent

    (unfinished, finished, attempts, recent), reading = await asyncio.gather(
        from_database(), backlog
    )
    waiting = {status: count for status, count in unfinished}
    by_status = {row[0]: row[1:] for row in finished}
    windows = []
    for index, (name, length) in enumerate(queries.WINDOWS):
        counts = {
            s.value: by_status[s.value][index] if s.value in by_status else 0
            for s in queries.FINISHED
        }
        ended, wait, run = attempts[index]
        windows.append(
            WindowStats(
                window=name,
                seconds=int(length.total_seconds()),
                finished=FinishedCounts(**counts),
                throughput_per_min=round(sum(counts.values()) / (length / timedelta(minutes=1)), 4),
                attempts_ended=ended,
                queue_wait_ms=wait,
                run_ms=run,
            )
        )
    return JobStats(
        generated_at=now,
        unfinished=UnfinishedCounts(
            **{s.value: waiting.get(s.value, 0) for s in queries.UNFINISHED}
        ),
        backlog=_backlog(reading),
        backlog_error=reading.error,
        windows=windows,
        recent_failures=[
            RecentFailure(
                id=str(job_id),
                kind=kind,
                error=error,
                attempts=tries,
                created_at=created_at,
                finished_at=finished_at,
                url=f"{base_url}/api/v1/jobs/{job_id}",
            )
            for job_id, kind, error, tries, created_at, finished_at in recent
        ],
    )


def job_attempts(job_id: uuid.UUID, rows: Sequence[Row]) -> JobAttempts:
    """``console_queries.JOB_ATTEMPTS``'s rows (at least one: the job exists) as shown."""
    return JobAttempts(
        job_id=str(job_id),
        attempts_started=rows[0][0],
        attempts=[
            AttemptOut(
                attempt=attempt,
                started_at=started_at,
                finished_at=finished_at,
                run_ms=_ms(started_at, finished_at),
                outcome=outcome,
                error=error,
                worker=worker,
            )
            for _, attempt, started_at, finished_at, outcome, error, worker in rows
            if attempt is not None  # the outer join's row of a job without attempts
        ],
    )


# --- OpenAPI examples: built by the functions above, so they are what the API answers -------

_EXAMPLE_ID = uuid.UUID("2e80aefd-6b1c-4a47-9a57-1d1e5b0b8a11")
_EXAMPLE_FAILED = uuid.UUID("5b0e9a4c-8f1d-4c2e-9d3a-7e6f1a2b3c44")
_T0 = datetime(2026, 11, 29, 10, 0, 0, 120000)


def _at(ms: int) -> datetime:
    return _T0 + timedelta(milliseconds=ms)


_ATTEMPTS_EXAMPLE = job_attempts(
    _EXAMPLE_ID,
    [
        (2, 1, _at(31), _at(5031), "retry", "database unavailable: connection refused", "w1:4242"),
        (2, 2, _at(5600), _at(5912), "success", None, "w2:4317"),
    ],
)


def _window(name: str, seconds: int, done: tuple[int, int, int], ended: int) -> WindowStats:
    return WindowStats(
        window=name,
        seconds=seconds,
        finished=FinishedCounts(*done),
        throughput_per_min=round(sum(done) / (seconds / 60), 4),
        attempts_ended=ended,
        queue_wait_ms=Percentiles(ended, 31.0, 118.4),
        run_ms=Percentiles(ended, 12.0, 2870.5),
    )


_STATS_EXAMPLE = JobStats(
    generated_at=_at(600_000),
    unfinished=UnfinishedCounts(PENDING=3, STARTED=2, RETRY=1),
    backlog=BacklogOut(
        broker="redis", queue="taskoverflow:ical", ready=3, in_flight=2, delayed=1, dead_lettered=0
    ),
    backlog_error=None,
    windows=[
        _window("5m", 300, (40, 1, 2), 43),
        _window("1h", 3600, (420, 6, 9), 440),
        _window("24h", 86400, (5210, 31, 40), 5300),
    ],
    recent_failures=[
        RecentFailure(
            id=str(_EXAMPLE_FAILED),
            kind="ical",
            error="the job queue could not be reached when the job was submitted",
            attempts=0,
            created_at=_at(1000),
            finished_at=_at(1004),
            url=f"http://localhost:6400/api/v1/jobs/{_EXAMPLE_FAILED}",
        )
    ],
)


# From a job's attempts back to the job and what can be done with it (OpenAPI links: a client,
# or schemathesis' stateful phase, walks on from here to a cancel or a retry).
_BY_JOB_ID = {"job_id": "$response.body#/job_id"}
_ATTEMPT_LINKS = {
    "GetJob": ("getJob", _BY_JOB_ID),
    "CancelJob": ("cancelJob", _BY_JOB_ID),
    "RetryJob": ("retryJob", _BY_JOB_ID),
}


class ConsoleController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)

    @get(
        "/stats",
        operation_id="getJobStats",
        summary="Job statistics: counts by state, broker backlog, timing per window, failures",
        description="Unfinished jobs by state (now); the job queue's messages in the broker "
        "(ready, in flight, delayed, dead-lettered; null with backlog_error when the broker "
        "cannot be read, the reading is at most 2 s old); for the last 5 minutes, hour and "
        "24 hours the jobs finished by state, jobs finished per minute, attempts ended, queue "
        "wait (creation to first start) and run time (per attempt) p50/p95 in ms; the newest "
        "FAILURE jobs with their reasons.",
        responses=errors(400, 503),
        operation_class=with_links_and_examples({}, {"200": _STATS_EXAMPLE}),
    )
    async def get_stats(
        self,
        request: Request,
        jobs: NamedDependency[Jobs],
        failures: Annotated[
            str | None,
            query_param(
                f"how many recent failures to list, 0 to {MAX_FAILURES} "
                f"(default {DEFAULT_FAILURES})",
                OpenAPIType.INTEGER,
                minimum=0,
                maximum=MAX_FAILURES,
            ),
        ] = None,
    ) -> JobStats:
        limit = parse_failures(failures)
        return await job_stats(jobs.db, _reading(jobs), jobs.base_url(request), limit)

    @get(
        "/{job_id:str}/attempts",
        operation_id="getJobAttempts",
        summary="A job's ended attempts: when each ran, how it ended, where",
        description="Oldest first. An attempt counted in attempts_started without an entry "
        "is running (the job is STARTED and it is the last) or was lost with its worker.",
        responses=errors(404, 503),
        operation_class=with_links_and_examples(
            {"200": _ATTEMPT_LINKS}, {"200": _ATTEMPTS_EXAMPLE}
        ),
    )
    async def get_attempts(self, job_id: FromPath[str], jobs: NamedDependency[Jobs]) -> JobAttempts:
        parsed = parse_job_id(job_id)
        rows = await jobs.db.fetch_all(queries.JOB_ATTEMPTS, id=parsed)
        if not rows:
            raise ApiError(404, "Job not found")
        return job_attempts(parsed, rows)

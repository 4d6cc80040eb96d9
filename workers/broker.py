"""The worker's broker: the shared one from ``models.queue`` with our explicit middleware.

Dramatiq's defaults are not production values (20 retries, a 7-day maximum backoff that SQS
cannot honour, a 10-minute time limit), so nothing here relies on them.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from models.queue import build_broker
from models.settings import Settings
from workers.middleware import JobLogContext, RecordExhaustedJobs, WorkerResources


def worker_middleware(
    settings: Settings, *, threads: int, run_reconciler: bool = True
) -> list[dramatiq.Middleware]:
    jobs = settings.jobs
    return [
        JobLogContext(),
        AgeLimit(),
        TimeLimit(time_limit=jobs.time_limit_ms, interval=1000),
        # On SIGTERM, interrupt running jobs so they are retried (handed back) rather than
        # killed mid-write when the container's stop timeout ends.
        ShutdownNotifications(notify_shutdown=True),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        RecordExhaustedJobs(),  # before Retries: see its docstring
        Retries(
            max_retries=jobs.max_retries,
            min_backoff=jobs.min_backoff_ms,
            max_backoff=jobs.max_backoff_ms,
        ),
        WorkerResources(settings, threads=threads, run_reconciler=run_reconciler),
    ]


def build_worker_broker(
    settings: Settings, *, threads: int, run_reconciler: bool = True
) -> dramatiq.Broker:
    """Build the broker and make it Dramatiq's global one, before any actor is declared."""
    broker = build_broker(
        settings.broker,
        worker_middleware(settings, threads=threads, run_reconciler=run_reconciler),
        consumer_prefetch=threads,
    )
    dramatiq.set_broker(broker)
    return broker

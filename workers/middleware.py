"""Our Dramatiq middleware: per-process resources, per-job log context, failure recording.

``WorkerResources`` builds the database engine after the worker process starts (never across
a fork) and runs the reconciler thread; actors reach both through ``current_resources()``.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine

from models import tracing
from models.engine import create_db_engine, worker_pool_size
from models.lifecycle import describe
from models.queue import TRACEPARENT_OPTION
from models.settings import Settings
from workers import metrics as job_metrics
from workers.reconciler import Reconciler
from workers.runner import mark_failed

log = structlog.get_logger("workers")


@dataclass
class Resources:
    settings: Settings
    engine: Engine


_current: Resources | None = None


def current_resources() -> Resources:
    """The running worker's engine and settings (set when the worker boots)."""
    if _current is None:
        raise RuntimeError("the worker has not booted: WorkerResources middleware missing?")
    return _current


class WorkerResources(Middleware):
    """Engine per worker process, disposed at shutdown; the periodic reconciler thread."""

    def __init__(self, settings: Settings, *, threads: int, run_reconciler: bool = True) -> None:
        self.settings = settings
        self.threads = threads
        self.run_reconciler = run_reconciler
        self._reconciler: Reconciler | None = None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        global _current
        engine = create_db_engine(
            self.settings.database,
            application_name="taskoverflow-worker",
            pool_size=worker_pool_size(self.threads),
            # One round trip less per job: run_job's first statement retries a stale
            # connection itself (workers/runner.py).
            pre_ping=False,
        )
        _current = Resources(settings=self.settings, engine=engine)
        if self.run_reconciler:
            self._reconciler = Reconciler(engine, broker, self.settings)
            self._reconciler.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        global _current
        if self._reconciler is not None:
            self._reconciler.stop()
            self._reconciler = None
        if _current is not None:
            _current.engine.dispose()
            _current = None


class JobLogContext(Middleware):
    """Each job's trace span and log context, in the thread that runs it.

    The span (CONSUMER, ``<actor> process``) continues the trace the message carries (the
    submitting request's; models.tracing) and is current while the job runs; job id, message
    id, attempt, trace id and span id are bound to every log line the thread writes meanwhile.
    A message without a valid traceparent (sent before traces, or garbled) starts a new trace.
    """

    def __init__(self) -> None:
        # The span, and the token that makes it current, of the job each thread is running:
        # the "after" hooks run in the thread the "before" hook did.
        self._running = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        job_id = message.args[0] if message.args else None
        attempt = message.options.get("retries", 0) + 1
        span = tracing.start_span(
            f"{message.actor_name} process",
            tracing.parent_context(message.options.get(TRACEPARENT_OPTION)),
            SpanKind.CONSUMER,
        )
        if span.is_recording():  # tracing on: worth describing
            span.set_attributes(
                {
                    "messaging.system": tracing.messaging_system(broker),
                    "messaging.operation.type": "process",
                    "messaging.destination.name": message.queue_name,
                    "messaging.message.id": message.message_id,
                    "taskoverflow.job.id": str(job_id),
                    "taskoverflow.job.attempt": attempt,
                }
            )
        self._running.job = (span, otel_context.attach(trace.set_span_in_context(span)))
        trace_id, span_id = tracing.hex_ids(span)
        structlog.contextvars.bind_contextvars(
            job_id=job_id,
            message_id=message.message_id,
            actor=message.actor_name,
            attempt=attempt,
            trace_id=trace_id,
            span_id=span_id,
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
        self._end(exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._end(None)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Export what is still batched: a worker process ends without running atexit hooks.
        tracing.shutdown_tracing()

    def _end(self, exception: BaseException | None) -> None:
        # Once per job even if Dramatiq calls an "after" hook twice (one raised).
        running = getattr(self._running, "job", None)
        self._running.job = None
        if running is not None:
            span, token = running
            if exception is not None:
                span.record_exception(exception)
                span.set_status(StatusCode.ERROR, describe(exception))
            span.end()
            otel_context.detach(token)
        structlog.contextvars.clear_contextvars()


class RecordExhaustedJobs(Middleware):
    """Sets FAILURE on a job whose message Dramatiq gave up on (retries exhausted).

    Must come *before* ``Retries`` in the middleware list: "after" hooks run in reverse
    order, so this one then sees the verdict ``Retries`` just reached.
    """

    def after_process_message(self, broker, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
        if exception is None or not message.failed or not message.args:
            return
        try:
            job_id = uuid.UUID(str(message.args[0]))
        except ValueError:
            return  # not one of our job ids: nothing to record
        attempts = message.options.get("retries", 0)
        reason = f"failed after {attempts} attempts: {describe(exception)}"
        try:
            resources = current_resources()
            if mark_failed(
                resources.engine, job_id, reason, keep=resources.settings.jobs.result_ttl
            ):
                # Only here is the job counted FAILURE: its last attempt went into the metrics
                # as a retry when it ended (the runner cannot know it was the last).
                job_metrics.job_exhausted(job_metrics.kind_of(message.actor_name), attempts)
                log.error("job finished", outcome="failure", error=reason)
        except Exception as exc:
            # The database is down: the reconciler will find the job and settle it later.
            log.error("could not record job failure", error=describe(exc))

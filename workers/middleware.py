"""Our Dramatiq middleware: per-process resources, per-job log context, failure recording.

``WorkerResources`` builds the database engine after the worker process starts (never across
a fork) and runs the reconciler thread; actors reach both through ``current_resources()``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware
from sqlalchemy import Engine

from models.engine import create_db_engine, worker_pool_size
from models.lifecycle import describe
from models.settings import Settings
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
    """Binds job id, message id and attempt to every log line of the job's thread."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.bind_contextvars(
            job_id=message.args[0] if message.args else None,
            message_id=message.message_id,
            actor=message.actor_name,
            attempt=message.options.get("retries", 0) + 1,
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
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
                log.error("job finished", outcome="failure", error=reason)
        except Exception as exc:
            # The database is down: the reconciler will find the job and settle it later.
            log.error("could not record job failure", error=describe(exc))

"""Finds jobs that nobody will finish and sends them again (or gives up on them); purges
what has outlived its retention.

A job can be stranded by a lost message (a broker restart without persistence), an API that
died between its commit and its send, or a worker that died so hard its message was lost.
Every worker process runs a pass now and then; the transitions themselves (which jobs are
stranded, resent or abandoned) are ``models.lifecycle.reconcile``. Each pass also runs the
retention purge (``models.lifecycle.purge``: expired results, old jobs, old idempotency
keys), in bounded SKIP LOCKED batches, so any number of worker processes share the work.
"""

from __future__ import annotations

import random
import threading

import dramatiq
import structlog
from sqlalchemy import Engine

from models import JobStatus, lifecycle
from models.queue import send_job
from models.settings import Settings
from workers import metrics as job_metrics

log = structlog.get_logger("workers.reconciler")


def reconcile_and_send(
    engine: Engine, broker: dramatiq.Broker, settings: Settings, *, recover_all: bool = False
) -> lifecycle.Reconciled:
    """One pass, then each resent job sent to the actor of its kind.

    The pass has committed before anything is sent; a send that fails leaves the job to be
    found stranded (and sent) again by a later pass.
    """
    done = lifecycle.reconcile(engine, settings.jobs, recover_all=recover_all)
    for job in done.resent:
        send_job(broker, settings.broker.queue_name, job.kind, job.id, job.traceparent)
    return done


class Reconciler:
    """The periodic pass of one worker process, on a daemon thread."""

    def __init__(self, engine: Engine, broker: dramatiq.Broker, settings: Settings) -> None:
        self.engine = engine
        self.broker = broker
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        interval = self.settings.jobs.reconcile_interval_s
        # Jitter spreads the passes of many worker processes over the interval.
        while not self._stop.wait(interval * random.uniform(0.5, 1.5)):  # noqa: S311
            self.run_once()

    def run_once(self) -> None:
        """One pass: reconcile, then purge. Never raises: a failed step (the database is
        down, say) is logged and tried again next pass; neither keeps the other from running."""
        try:
            done = reconcile_and_send(self.engine, self.broker, self.settings)
        except Exception as exc:
            log.warning("reconciler pass failed", error=lifecycle.describe(exc))
        else:
            for job in done.settled:
                # The worst failures (crash loops, OOM kills) count in JobsFinished too:
                # the failure alarm reads it (ops/terraform/cloudwatch.tf).
                job_metrics.job_abandoned(job.kind, JobStatus(job.status), job.attempts)
            if done.resent or done.abandoned:
                log.warning(
                    "reconciled stranded jobs",
                    resent=[str(job.id) for job in done.resent],
                    abandoned=[str(job_id) for job_id in done.abandoned],
                )
        try:
            purged = lifecycle.purge(self.engine, self.settings.jobs)
        except Exception as exc:
            log.warning("retention purge failed", error=lifecycle.describe(exc))
        else:
            if any(purged):
                log.info("purged expired jobs", **purged._asdict())

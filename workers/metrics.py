"""The workers' job metrics: Prometheus series, and on AWS the same figures as CloudWatch EMF.

``workers.runner`` tells this module what each attempt did (``job_claimed``,
``attempt_ended``) and ``workers.middleware.RecordExhaustedJobs`` which jobs ran out of
retries (``job_exhausted``). Each call updates:

- Prometheus (prometheus_client): ``taskoverflow_job_attempts_total{kind,outcome}``, one per
  ended attempt, with the outcome the runner saw as it ended (success, retry, failure,
  cancelled); ``taskoverflow_jobs_finished_total{kind,status}``, one per job a worker
  settled (SUCCESS, FAILURE, CANCELLED); the histograms ``taskoverflow_job_queue_wait_seconds
  {kind}`` (first claim - submission), ``taskoverflow_job_run_seconds{kind,outcome}`` (per
  attempt) and ``taskoverflow_job_attempts_used{kind}`` (attempts a finished job took).
  A job whose retries run out: its last attempt counts as ``retry`` (the runner cannot know
  it was the last), and the job as ``FAILURE`` in jobs_finished once the middleware settles
  it; nothing is counted twice. Under ``python -m workers`` every process of the pool writes
  to its own files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, set up
  by the launcher) and ``workers.metrics_server`` serves their sum; in one process (tests,
  the zero-setup run) the series live in the default registry.
- CloudWatch (``METRICS_EMF=true``): one Embedded Metric Format line per ended attempt on
  stdout, which the ECS log driver ships to CloudWatch Logs, where it becomes metrics with
  no agent. The names below are what ops/terraform's alarms and dashboard read (a test
  ties them).

Recording costs a few microseconds per attempt (a dictionary lookup for the labelled series,
a lock-protected add per value): nothing beside a job's five database round trips
(docs/BENCHMARKS.md, P1).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram

from models import AttemptOutcome, JobStatus
from models.lifecycle import Claimed
from models.queue import ACTOR_BY_KIND
from models.settings import TelemetrySettings

# --- Prometheus -----------------------------------------------------------------------------

#: From a job picked up at once (an idle pool: ~10 ms) to a backlog of tens of minutes.
QUEUE_WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
)  # fmt: skip
#: From a small calendar (a few ms) to the time limit's order (JOB_TIME_LIMIT_MS: minutes).
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: Attempts are few: JOB_MAX_RETRIES + 1 at most, plus redeliveries after a crash.
ATTEMPTS_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)

JOB_ATTEMPTS = Counter(
    "taskoverflow_job_attempts",
    "Job attempts that ended, by how (a job whose retries ran out: its last one is a retry)",
    ["kind", "outcome"],
)
JOBS_FINISHED = Counter(
    "taskoverflow_jobs_finished",
    "Jobs a worker settled for good, by final status (SUCCESS, FAILURE, CANCELLED)",
    ["kind", "status"],
)
QUEUE_WAIT = Histogram(
    "taskoverflow_job_queue_wait_seconds",
    "From a job's submission to its first attempt's claim",
    ["kind"],
    buckets=QUEUE_WAIT_BUCKETS,
)
RUN_TIME = Histogram(
    "taskoverflow_job_run_seconds",
    "Run time of each ended attempt, from its claim to its outcome",
    ["kind", "outcome"],
    buckets=RUN_BUCKETS,
)
ATTEMPTS_USED = Histogram(
    "taskoverflow_job_attempts_used",
    "Attempts a job took, observed when a worker settled it",
    ["kind"],
    buckets=ATTEMPTS_BUCKETS,
)

_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: prometheus_client's own lookup takes a
    lock and builds a key on every call."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


# --- CloudWatch Embedded Metric Format ------------------------------------------------------

#: Metric names (ops/terraform/cloudwatch.tf reads them; tests/unit/test_metric_names.py
#: checks that it does). One attempt: ATTEMPTS (1) and RUN_TIME_MS by kind and outcome; the
#: first attempt of a job also QUEUE_WAIT_MS by kind; a job settled: JOBS_FINISHED (1) by kind
#: and final status. Three small dimension sets: each name x dimension values is one billed
#: CloudWatch metric.
EMF_ATTEMPTS = "Attempts"
EMF_RUN_TIME_MS = "RunTime"
EMF_QUEUE_WAIT_MS = "QueueWait"
EMF_JOBS_FINISHED = "JobsFinished"
#: Dimension names.
DIM_KIND, DIM_OUTCOME, DIM_STATUS = "Kind", "Outcome", "Status"
#: Which dimension set each metric is published under.
EMF_DIMENSIONS: dict[str, list[str]] = {
    EMF_ATTEMPTS: [DIM_KIND, DIM_OUTCOME],
    EMF_RUN_TIME_MS: [DIM_KIND, DIM_OUTCOME],
    EMF_QUEUE_WAIT_MS: [DIM_KIND],
    EMF_JOBS_FINISHED: [DIM_KIND, DIM_STATUS],
}
EMF_UNITS = {
    EMF_ATTEMPTS: "Count",
    EMF_RUN_TIME_MS: "Milliseconds",
    EMF_QUEUE_WAIT_MS: "Milliseconds",
    EMF_JOBS_FINISHED: "Count",
}


class _Emf:
    """Whether this process writes EMF lines, and under which namespace: off until
    ``configure`` says otherwise (each worker process, at boot)."""

    namespace: str | None = None
    lock = threading.Lock()


def configure(telemetry: TelemetrySettings) -> None:
    """Write EMF lines in this process if METRICS_EMF is set (a worker calls it at boot)."""
    _Emf.namespace = telemetry.metrics_namespace if telemetry.metrics_emf else None


def emf_line(
    namespace: str, dimensions: dict[str, str], values: dict[str, float], *, at_ms: int
) -> str:
    """One EMF log event: ``values`` (metric name -> value) under their dimension sets
    (EMF_DIMENSIONS), every dimension and metric a top-level member, as CloudWatch requires.
    One directive per dimension set, so each metric is published under its own set only."""
    directives: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for name in values:
        directives.setdefault(tuple(EMF_DIMENSIONS[name]), []).append(
            {"Name": name, "Unit": EMF_UNITS[name]}
        )
    event: dict[str, Any] = {
        "_aws": {
            "Timestamp": at_ms,
            "CloudWatchMetrics": [
                {"Namespace": namespace, "Dimensions": [list(dims)], "Metrics": metrics}
                for dims, metrics in directives.items()
            ],
        },
        **dimensions,
        **values,
    }
    return json.dumps(event, separators=(",", ":"))


def _emit(dimensions: dict[str, str], values: dict[str, float]) -> None:
    namespace = _Emf.namespace
    if namespace is None:
        return
    line = emf_line(namespace, dimensions, values, at_ms=int(time.time() * 1000))
    # sys.stdout looked up now: Dramatiq's worker processes replace it with their log pipe,
    # where one write below PIPE_BUF arrives whole; the lock keeps our threads in turn.
    with _Emf.lock:
        sys.stdout.write(line + "\n")


# --- What the runner and the middleware report ----------------------------------------------


def _seconds(later: datetime, earlier: datetime) -> float:
    return max((later - earlier).total_seconds(), 0.0)


def job_claimed(job: Claimed) -> None:
    """An attempt began; the first one of a job ends the job's wait in the queue."""
    if job.attempts == 1:
        _child(QUEUE_WAIT, job.kind).observe(_seconds(job.started_at, job.created_at))


def attempt_ended(
    job: Claimed, outcome: AttemptOutcome, run_s: float, *, finished: JobStatus | None = None
) -> None:
    """An attempt of ``job`` ended with ``outcome`` after ``run_s`` seconds; ``finished``:
    the job's final status, when this attempt settled it."""
    kind = job.kind
    _child(JOB_ATTEMPTS, kind, outcome.value).inc()
    _child(RUN_TIME, kind, outcome.value).observe(run_s)
    if finished is not None:
        _finished(kind, finished, job.attempts)
    if _Emf.namespace is None:
        return
    values = {EMF_ATTEMPTS: 1.0, EMF_RUN_TIME_MS: round(run_s * 1000, 3)}
    dimensions = {DIM_KIND: kind, DIM_OUTCOME: outcome.value}
    if job.attempts == 1:
        values[EMF_QUEUE_WAIT_MS] = round(_seconds(job.started_at, job.created_at) * 1000, 3)
    if finished is not None:
        values[EMF_JOBS_FINISHED] = 1.0
        dimensions[DIM_STATUS] = finished.value
    _emit(dimensions, values)


#: The job kind each actor runs (the inverse of models.queue.ACTOR_BY_KIND).
_KIND_BY_ACTOR = {actor: kind for kind, actor in ACTOR_BY_KIND.items()}


def kind_of(actor_name: str) -> str:
    """The kind of job ``actor_name`` runs (an actor of no kind: its own name)."""
    return _KIND_BY_ACTOR.get(actor_name, actor_name)


def job_exhausted(kind: str, attempts: int) -> None:
    """A job ran out of retries and was settled FAILURE (its attempts already counted)."""
    _finished(kind, JobStatus.FAILURE, attempts)
    _emit({DIM_KIND: kind, DIM_STATUS: JobStatus.FAILURE.value}, {EMF_JOBS_FINISHED: 1.0})


def job_abandoned(kind: str, status: JobStatus, attempts: int) -> None:
    """The reconciler settled a job nobody would finish (its workers kept dying: FAILURE; or
    it died after a cancel was asked for: CANCELLED). No attempt of it ended to count it."""
    _finished(kind, status, attempts)
    _emit({DIM_KIND: kind, DIM_STATUS: status.value}, {EMF_JOBS_FINISHED: 1.0})


def _finished(kind: str, status: JobStatus, attempts: int) -> None:
    _child(JOBS_FINISHED, kind, status.value).inc()
    _child(ATTEMPTS_USED, kind).observe(attempts)

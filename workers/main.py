"""Entry point for the Dramatiq CLI: ``dramatiq workers.main -p 2 -t 4``.

The CLI imports this module in every worker process, so here, and only here, the settings
are read and the broker is built at import time. ``DRAMATIQ_THREADS`` (a setting, default 8)
must match ``-t`` so the connection pool is sized to the threads; ``python -m workers`` (the
Makefile and the images) passes ``-t`` from that same setting.
"""

import structlog

from models.log_config import configure_logging
from models.settings import ConfigError, Settings
from models.tracing import configure_tracing
from workers import metrics as job_metrics
from workers.actors import register_actors
from workers.broker import build_worker_broker

try:
    settings = Settings.from_env()
except ConfigError as exc:
    raise SystemExit(f"taskoverflow worker: configuration error: {exc}") from None
threads = settings.worker.threads

configure_logging(settings.log, process="worker")
# Flushed at worker shutdown by JobLogContext (a worker process skips atexit hooks).
configure_tracing(settings.telemetry, process="worker")
job_metrics.configure(settings.telemetry)  # CloudWatch EMF lines if METRICS_EMF
broker = build_worker_broker(settings, threads=threads)
register_actors(broker, settings.broker.queue_name)
if settings.broker.is_sqs:
    # Only an SQS deployment loads boto3 (memory per process: docs/BENCHMARKS.md, P4).
    from models.sqs import JobSQSBroker, QueueMissing

    assert isinstance(broker, JobSQSBroker)  # noqa: S101 (what build_broker returns for sqs://)
    try:
        broker.resolve_queues()
    except QueueMissing as exc:
        raise SystemExit(f"taskoverflow worker: {exc}") from None
structlog.get_logger("workers").info(
    "worker process ready", queue=settings.broker.queue_name, threads=threads
)

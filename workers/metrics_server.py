"""One Prometheus ``/metrics`` for a whole worker pool: ``serve`` runs in its own process.

``python -m workers`` hands Dramatiq ``--fork-function workers.metrics_server:serve`` (when
WORKER_METRICS_PORT is not 0), so the dramatiq CLI forks this process beside the worker
processes and stops it with them. Every worker process writes its series to its own files in
PROMETHEUS_MULTIPROC_DIR (a fresh directory the launcher made for this pool);
``pool_registry`` adds them up at each scrape. Files of a worker process that died stay, so
counters and histograms never go backwards within the pool's life; a new pool (a restarted
container) starts from zero, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from models.log_config import configure_logging
from models.settings import ConfigError, Settings

log = structlog.get_logger("workers.metrics")


def pool_registry() -> CollectorRegistry:
    """The sum over every process of the pool in multiprocess mode; otherwise (workers in
    this very process: tests, the zero-setup run) this process's own default registry."""
    registry = CollectorRegistry()
    try:
        # prometheus_client reads PROMETHEUS_MULTIPROC_DIR itself (set by the launcher).
        MultiProcessCollector(registry)
    except ValueError:
        return REGISTRY
    return registry


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape (wsgiref logs every request)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def metrics_server(host: str, port: int) -> WSGIServer:
    """A server of the pool's metrics on ``host:port`` (not yet serving)."""
    return make_server(host, port, make_wsgi_app(pool_registry()), handler_class=_QuietHandler)


def serve() -> int:
    """The fork function: serve the pool's metrics until Dramatiq stops the pool (SIGTERM ends
    the process from its signal handler). A port already taken leaves the pool without
    metrics, never without workers: this process only says so and ends."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:  # the launcher checked them already: unreachable in practice
        raise SystemExit(f"taskoverflow worker metrics: configuration error: {exc}") from None
    configure_logging(settings.log, process="worker")
    host, port = settings.telemetry.worker_metrics_host, settings.telemetry.worker_metrics_port
    try:
        server = metrics_server(host, port)
    except OSError as exc:
        log.error("worker metrics not served", address=f"{host}:{port}", error=str(exc))
        return 1
    log.info("worker metrics served", url=f"http://{host}:{port}/metrics")
    server.serve_forever()
    return 0

"""TaskOverflow in one process, with nothing installed but Python: `make run` without
DATABASE_URL and BROKER_URL.

The API and the page, plus the same actors, middleware and reconciler as the worker pool,
on Dramatiq's in-memory broker, with a SQLite file (``taskoverflow.sqlite3`` in
TASKOVERFLOW_DATA_DIR, default the current directory) migrated by Alembic at start. A job
interrupted by a restart is picked up again as soon as the process is back. Set
DATABASE_URL and BROKER_URL (or TASKOVERFLOW_ENV=production) for the real thing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import dramatiq
import structlog
import uvicorn

from api.app import create_app
from models import schema
from models.engine import create_db_engine
from models.log_config import configure_logging
from models.settings import ConfigError, MissingInProduction, Settings
from models.tracing import configure_tracing
from workers.actors import register_actors
from workers.broker import build_worker_broker
from workers.reconciler import reconcile_and_send

THREADS = 4


def settings_from(environ: Mapping[str, str]) -> Settings:
    try:
        return Settings.for_zero_setup(environ)
    except MissingInProduction as exc:
        raise SystemExit(f"taskoverflow: {exc}") from None
    except ConfigError as exc:
        raise SystemExit(f"taskoverflow: configuration error: {exc}") from None


def migrate(settings: Settings) -> None:
    engine = create_db_engine(settings.database, application_name="taskoverflow-migrate")
    schema.upgrade(engine)
    engine.dispose()


def main() -> None:
    settings = settings_from(dict(os.environ))
    configure_logging(settings.log, process="taskoverflow")
    # One process, one provider: the request's span and the job's share it (and its exporter,
    # with OTEL_EXPORTER_OTLP_ENDPOINT set). The worker's shutdown flushes it.
    configure_tracing(settings.telemetry, process="taskoverflow")
    log = structlog.get_logger("taskoverflow")
    migrate(settings)

    broker = build_worker_broker(settings, threads=THREADS)
    register_actors(broker, settings.broker.queue_name)
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    try:
        # The in-memory broker lost whatever was queued when the last run stopped: send every
        # unfinished job again now, instead of after the reconciler's grace periods.
        engine = create_db_engine(settings.database, application_name="taskoverflow-boot")
        recovered = reconcile_and_send(engine, broker, settings, recover_all=True)
        engine.dispose()
        if recovered.resent:
            log.info("resumed unfinished jobs", jobs=[str(job.id) for job in recovered.resent])

        port = settings.zero_setup.port
        log.info(
            "TaskOverflow is up", page=f"http://127.0.0.1:{port}/", database=settings.database.url
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, broker=broker),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                proxy_headers=False,  # TRUSTED_PROXIES decides (api.client_address)
            )
        )
        try:
            server.run()
        except KeyboardInterrupt:
            # uvicorn has already shut down gracefully; it re-raises Ctrl-C only so that the
            # default handler can end the process. Ctrl-C is how `make run` is stopped: no
            # traceback for it.
            log.info("TaskOverflow stopped")
    finally:
        worker.stop()
        broker.close()


if __name__ == "__main__":
    sys.exit(main())

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
from pathlib import Path

import dramatiq
import structlog
import uvicorn
from sqlalchemy.orm import Session

from api.app import create_app
from models import schema
from models.database import create_db_engine
from models.log_config import configure_logging
from models.queue import calendar_message
from models.settings import ConfigError, Settings
from workers.actors import register_actors
from workers.broker import build_worker_broker
from workers.reconciler import reconcile_once

THREADS = 4


def settings_from(environ: dict[str, str]) -> Settings:
    if environ.get("TASKOVERFLOW_ENV") == "production":
        missing = [v for v in ("DATABASE_URL", "BROKER_URL") if not environ.get(v)]
        if missing:
            raise SystemExit(
                f"taskoverflow: {' and '.join(missing)} not set, and TASKOVERFLOW_ENV=production "
                "never falls back to SQLite or the in-memory broker"
            )
    data_dir = Path(environ.get("TASKOVERFLOW_DATA_DIR") or ".").resolve()
    environ.setdefault("DATABASE_URL", f"sqlite:///{data_dir / 'taskoverflow.sqlite3'}")
    environ.setdefault("BROKER_URL", "memory://")
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        raise SystemExit(f"taskoverflow: configuration error: {exc}") from None


def migrate(settings: Settings) -> None:
    engine = create_db_engine(settings.database, application_name="taskoverflow-migrate")
    schema.upgrade(engine)
    engine.dispose()


def main() -> None:
    settings = settings_from(dict(os.environ))
    configure_logging(settings.log, process="taskoverflow")
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
        with Session(engine) as session:
            recovered = reconcile_once(
                session,
                settings.jobs,
                lambda job_id: broker.enqueue(calendar_message(settings.broker.queue_name, job_id)),
                recover_all=True,
            )
        engine.dispose()
        if recovered.resent:
            log.info("resumed unfinished jobs", jobs=[str(j) for j in recovered.resent])

        port = int(os.environ.get("PORT", "6400"))
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

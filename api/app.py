"""The Litestar application factory.

``create_app(settings)`` wires settings, database and job sender into an app; uvicorn runs
``create_app_from_env`` (``uvicorn --factory api.app:create_app_from_env``), the only place
the API reads its environment.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from api.database import Database, create_api_engine
from api.errors import EXCEPTION_HANDLERS
from api.request_log import request_log_middleware
from api.routes.calendar_jobs import CalendarJobController
from api.routes.health import health, ready
from api.routes.page import page_routes
from api.routes.todos import TodoController
from api.state import ApiResources, JobSender
from models.log_config import configure_logging
from models.queue import build_broker
from models.settings import ConfigError, Settings

log = structlog.get_logger("api")


def create_app(settings: Settings, *, broker: dramatiq.Broker | None = None) -> Litestar:
    """An app for ``settings``. Nothing connects until the first request needs to.

    ``broker``: send jobs through this one instead of building one from the settings (the
    single-process run shares its in-memory broker with the actors).
    """
    engine = create_api_engine(settings.database, application_name="taskoverflow-api")
    resources = ApiResources(
        settings=settings,
        db=Database(engine),
        sender=JobSender(broker or build_broker(settings.broker), settings.broker.queue_name),
    )

    def size_thread_pool() -> None:
        # Handlers are async; the threads only make broker sends (blocking clients). Sized
        # like the database pool: a submission waits on at most one of each.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.database.pool_size, thread_name_prefix="api-send")
        )
        log.info("api ready", db_connections=settings.database.pool_size)

    async def release() -> None:
        await engine.dispose()
        resources.sender.broker.close()

    return Litestar(
        route_handlers=[health, ready, TodoController, CalendarJobController, *page_routes()],
        state=State({"resources": resources}),
        on_startup=[size_thread_pool],
        on_shutdown=[release],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[request_log_middleware],
        request_max_body_size=settings.api.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="TaskOverflow",
            version="1.0.0",
            description="Todos, and calendar exports as asynchronous jobs.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        logging_config=None,  # ours (models.log_config) is installed by the entry point
    )


def create_app_from_env() -> Litestar:
    """Entry point for uvicorn: read the environment once, configure logging, build the app."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"taskoverflow api: configuration error: {exc}") from None
    configure_logging(settings.log, process="api")
    return create_app(settings)

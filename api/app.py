"""The Litestar application factory.

``create_app(settings)`` wires settings, database and job sender into an app; uvicorn runs
``create_app_from_env`` (``uvicorn --factory api.app:create_app_from_env``), the only place
the API reads its environment.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import dramatiq
import structlog
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.types import (
    ASGIApp,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)
from litestar.utils import normalize_path

from api.access import EXPOSED_HEADERS, access_layer
from api.backlog import BacklogReader, backlog_reader
from api.database import Database, create_api_engine
from api.errors import EXCEPTION_HANDLERS
from api.http_methods import rfc9110_methods
from api.idempotency import IdempotencyKeys
from api.job_context import Jobs
from api.job_events import JobEvents
from api.keys import ApiKeys
from api.metrics import HttpMetrics, metrics_route
from api.rate_limits import MemoryStore, PostgresStore, RateLimiter, RedisStore, Store
from api.request_log import request_log_middleware
from api.routes.calendar_jobs import CalendarJobController
from api.routes.console import ConsoleController
from api.routes.health import health, ready
from api.routes.job_events import job_events
from api.routes.jobs import JobController
from api.routes.page import page_routes
from api.routes.todos import TodoController
from api.security_headers import security_headers
from api.state import CrashAfterCommitSender, JobSender
from models.log_config import configure_logging
from models.queue import build_broker
from models.settings import ConfigError, Settings
from models.tracing import configure_tracing, shutdown_tracing

log = structlog.get_logger("api")

#: Where create_app leaves the app's IdempotencyKeys (app.state) for _http_entry.
IDEMPOTENCY_KEYS = "idempotency_keys"
#: Where create_app leaves the app's HttpMetrics (app.state) for _http_entry.
HTTP_METRICS = "http_metrics"
#: Where create_app leaves the access layer's wrapper (app.state) for _http_entry.
ACCESS = "access"


class TaskOverflowApp(Litestar):
    """Litestar, with every HTTP request passing our outer layers before Litestar routes it:
    the request metrics and the access log (so they count every request, those routing
    refuses included) and HEAD and ``Allow`` as RFC 9110 has them (api.http_methods), which
    must act before routing."""

    @cached_property
    def _http_entry(self) -> ASGIApp:
        # Idempotency-Key on the creating POSTs (api.idempotency), set up by create_app.
        inner = self.state[IDEMPOTENCY_KEYS].wrap(super().__call__)
        # Client identity, API keys and rate limits (api.access): before idempotency, so a
        # refused request is never remembered as a POST's answer.
        inner = self.state[ACCESS](inner)
        # Requests are counted only where /metrics serves them (API_METRICS).
        metrics: HttpMetrics | None = self.state.get(HTTP_METRICS)
        observe = None if metrics is None else metrics.observer(self._route_of)
        # Security headers on every answer, the refusals of the layers inside included.
        return request_log_middleware(
            security_headers(rfc9110_methods(self, inner)), observe=observe
        )

    def _route_of(self, path: str, method: str) -> str:
        """The path template ``path`` routes to for ``method`` (Litestar's cached routing);
        raises if none does. For requests not routed on the scope the metrics see."""
        return self.asgi_router.handle_routing(normalize_path(path), method)[4]

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] == "http":
            await self._http_entry(scope, receive, send)  # type: ignore[arg-type]
        else:
            await super().__call__(scope, receive, send)


def _constant(value: Any) -> Provide:
    """A dependency that is ``value`` for every request (made once, in create_app)."""
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def _backlog_or_none(sender: JobSender) -> BacklogReader | None:
    """The broker-depth reader of ``sender``'s queue, None for a broker it cannot read (a
    test's stand-in): /metrics then has the database's backlog only."""
    try:
        return backlog_reader(sender)
    except TypeError:
        return None


def _rate_limiter(settings: Settings, db: Database) -> RateLimiter | None:
    """The rate limits' counter in the store RATE_LIMIT_STORE names; None if unlimited."""
    limits = settings.limits
    if not limits.rate_limited:
        return None
    where = settings.rate_limit_store
    store: Store
    if where == "memory":
        store = MemoryStore()
    elif where == "postgres":
        store = PostgresStore(db)
    else:
        store = RedisStore(where, settings.broker.namespace)
    return RateLimiter(
        store,
        reads_per_minute=limits.rate_limit_reads,
        writes_per_minute=limits.rate_limit_writes,
    )


def create_app(settings: Settings, *, broker: dramatiq.Broker | None = None) -> Litestar:
    """An app for ``settings``. Nothing connects until the first request needs to.

    ``broker``: send jobs through this one instead of building one from the settings (the
    single-process run shares its in-memory broker with the actors).
    """
    engine = create_api_engine(settings.database, application_name="taskoverflow-api")
    # Reliability tests only (settings refuse it in production): a sender that kills the
    # process when asked to send, i.e. after the job's row is committed and before its
    # message leaves, which the reconciler must then make up for.
    crash = settings.api.faults == "crash-after-commit"
    sender_class = CrashAfterCommitSender if crash else JobSender
    sender = sender_class(broker or build_broker(settings.broker), settings.broker.queue_name)
    db = Database(engine)
    events = JobEvents(engine)  # job change notifications for the events streams
    http_metrics = HttpMetrics()
    serve_metrics = settings.api.metrics
    keys = ApiKeys(settings.access) if settings.access.keys_required else None
    limiter = _rate_limiter(settings, db)

    def access(inner: ASGIApp) -> ASGIApp:
        return access_layer(
            inner,
            proxies=settings.access.proxy_networks,
            keys=keys,
            limiter=limiter,
            cors_origins=settings.access.cors_origins,
        )

    def size_thread_pool() -> None:
        # Handlers are async; the threads only make broker sends (blocking clients). Sized
        # like the database pool: a submission waits on at most one of each.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.database.pool_size, thread_name_prefix="api-send")
        )
        log.info("api ready", db_connections=settings.database.pool_size)

    def load_keys() -> None:
        if keys is not None:
            keys.start()  # a secret's keys are read on their own thread, now and then

    async def release() -> None:
        if keys is not None:
            keys.stop()
        if limiter is not None:
            await limiter.store.close()
        await events.close()
        await engine.dispose()
        sender.broker.close()

    return TaskOverflowApp(
        route_handlers=[
            health,
            ready,
            TodoController,
            CalendarJobController,
            JobController,
            ConsoleController,
            job_events,
            *([metrics_route(http_metrics, db, _backlog_or_none(sender))] if serve_metrics else []),
            *page_routes(),
        ],
        # What handlers use, by parameter name and type (``db: NamedDependency[Database]``).
        dependencies={
            "db": _constant(db),
            "jobs": _constant(
                Jobs(
                    db,
                    sender,
                    settings.api.public_base_url,
                    settings.jobs.result_ttl,
                    settings.limits,
                )
            ),
            "events": _constant(events),
            "limits": _constant(settings.limits),
        },
        on_startup=[size_thread_pool, load_keys, events.end_streams_on_signals],
        on_shutdown=[release],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.api.max_body_bytes,
        # Off unless CORS_ALLOW_ORIGINS names the other origins whose pages may call us.
        cors_config=(
            CORSConfig(
                allow_origins=list(settings.access.cors_origins),
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                expose_headers=list(EXPOSED_HEADERS),
            )
            if settings.access.cors_origins
            else None
        ),
        state=State(
            {
                IDEMPOTENCY_KEYS: IdempotencyKeys(db, settings),
                ACCESS: access,
                **({HTTP_METRICS: http_metrics} if serve_metrics else {}),
            }
        ),
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
    configure_tracing(settings.telemetry, process="api")
    app = create_app(settings)
    # Export the spans still batched at shutdown: uvicorn ends by re-raising SIGTERM, which
    # skips the exit hooks.
    app.on_shutdown.append(shutdown_tracing)
    return app

"""Request ids, the request's trace span and one access-log line per request (a plain ASGI
middleware: cheap).

Every request is in a trace (models.tracing): the one an incoming W3C ``traceparent`` header
names, or a new one; its trace id is bound to every log line of the request, the access line
included, and the jobs it submits carry it. With tracing on (an OTLP endpoint) the request is
a SERVER span; with tracing off no span is made at all, only the ids (a few microseconds less
per request). The request's metrics are counted here too (``observe``): one layer, not two.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import cast

import structlog
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, StatusCode

from models import tracing

log = structlog.get_logger("api.access")

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


#: Told of each request as it ends: (scope, method, path as asked, status, seconds)
#: (api.metrics.HttpMetrics.observer).
RequestObserver = Callable[[HTTPScope, str, str, int, float], None]


class _RefusalSampling:
    """Rate-limit refusals (429) are logged one in ``EVERY``, each such line saying so
    (``sampled``): a flooding client would otherwise buy a log line with each refused
    request, cheaply for it and not for us. Counts stay exact in the metrics."""

    EVERY = 100

    def __init__(self) -> None:
        self._seen = 0

    def log_this(self) -> bool:
        self._seen += 1
        return self._seen % self.EVERY == 1

    def sampled(self, status: int) -> dict[str, int]:
        return {"sampled": self.EVERY} if status == 429 else {}


def request_log_middleware(app: ASGIApp, observe: RequestObserver | None = None) -> ASGIApp:
    refusals = _RefusalSampling()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        http = cast("HTTPScope", scope)
        # Routing may rewrite scope["path"] (mounts): keep what the client asked for.
        method, path = http["method"], http["path"]
        headers = dict(scope["headers"])
        # Keep an upstream id (load balancer, client) if it is sane; else make one.
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.fullmatch(incoming) else uuid.uuid4().hex
        traceparent = headers.get(b"traceparent")
        incoming_trace = None if traceparent is None else traceparent.decode("latin-1")
        incoming_state = headers.get(b"tracestate", b"").decode("latin-1") or None
        span: trace.Span | None = None
        if tracing.recording():
            # Named for the method until routing has found the route (see the end).
            parent = tracing.parent_context(incoming_trace, incoming_state)
            span = tracing.start_span(method, parent, SpanKind.SERVER)
            # Current for the request: a job it submits is sent in a child of this span.
            token = context.attach(trace.set_span_in_context(span))
            trace_id = format(span.get_span_context().trace_id, "032x")
        else:
            # Off: only the request's trace id, which its log lines and jobs carry.
            trace_id, request_token = tracing.enter_request(incoming_trace, incoming_state)
        structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        except BaseException as exc:
            if span is not None:
                span.record_exception(exc)
            raise
        finally:
            if span is not None:
                if span.is_recording():  # not when the caller's trace is unsampled
                    _describe(span, http, status)
                span.end()
                context.detach(token)
            else:
                tracing.leave_request(request_token)
            seconds = time.perf_counter() - started
            if observe is not None:
                observe(http, method, path, status, seconds)
            if status != 429 or refusals.log_this():
                log.info(
                    "request",
                    method=method,
                    path=path,
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                    **refusals.sampled(status),
                )
            structlog.contextvars.unbind_contextvars("request_id", "trace_id")

    return middleware


def _describe(span: trace.Span, scope: HTTPScope, status: int) -> None:
    """The HTTP semantic conventions' name and attributes of a recorded server span. Only
    called when the span is recorded: with tracing off none of this is worth computing."""
    method = scope["method"]
    # Litestar leaves the matched route's template in the scope (None: routing found none).
    route = scope.get("path_template")
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attributes(
        {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope["scheme"],
            "http.response.status_code": status,
        }
    )
    if status >= 500:
        # A server span is in error for a 5xx only: a 4xx is the client's mistake.
        span.set_status(StatusCode.ERROR)

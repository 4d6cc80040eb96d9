"""Traces: one OpenTelemetry TracerProvider per process, and the spans a job's trace is made of.

A job's trace has three parts, one trace id:

- the API's SERVER span for the request that submits (or retries) the job (api.request_log);
- a PRODUCER span, ``send <queue>``, its child, whose context is stored on the job row
  (``jobs.traceparent``) and carried in the message (``models.queue.TRACEPARENT_OPTION``): so
  the reconciler's resend of a stranded job continues the same trace;
- the worker's CONSUMER span, ``<actor> process``, the producer span's child
  (workers.middleware.JobLogContext).

Ids are always made and carried, so every log line of the request and of the job names its
trace. Spans are only recorded and exported (OTLP/HTTP) when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set; otherwise every span is unsampled from its start: a non-recording span with valid
ids, no attributes and no processor, which costs about two microseconds (docs/OBSERVABILITY.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from models.settings import TelemetrySettings

#: W3C Trace Context: the ``traceparent`` (and ``tracestate``) format, both ways.
PROPAGATOR = TraceContextTextMapPropagator()

_SCOPE = "taskoverflow"


def _unconfigured() -> TracerProvider:
    # Until configure_tracing runs (tests that build the app or a worker directly, tools):
    # tracing is off, yet ids are still made and carried, exactly as with no endpoint set.
    return TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)


_provider: TracerProvider = _unconfigured()
_tracer: Tracer = _provider.get_tracer(_SCOPE)
#: Whether spans are recorded (an exporter is configured): start_span's fast path if not.
_recording = False
_ids = RandomIdGenerator()


def configure_tracing(
    telemetry: TelemetrySettings, *, process: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Make this process's tracer provider (call once, at start; again replaces it).

    ``process`` is ``api`` or ``worker`` (the default service name: taskoverflow-<process>).
    Spans are recorded (honouring an incoming trace's sampled flag) and exported when
    ``telemetry.otlp_endpoint`` is set, in batches to ``<endpoint>/v1/traces``, or when
    ``exporter`` is given (tests: each span handed to it as it ends). Otherwise none is.

    The provider is ours, not OpenTelemetry's global one, which can only be set once per
    process: a test can configure tracing again with an exporter of its own.
    """
    global _provider, _tracer, _recording
    resource = Resource.create(
        {"service.name": telemetry.service_name or f"taskoverflow-{process}"}
    )
    if exporter is None and telemetry.otlp_endpoint is not None:
        # Imported only when exporting: requests and protobuf are memory every process
        # would carry for nothing otherwise.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = f"{telemetry.otlp_endpoint.rstrip('/')}/v1/traces"
        processor: SimpleSpanProcessor | BatchSpanProcessor | None = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint)
        )
    elif exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    else:
        processor = None
    # ParentBased: a trace an upstream caller chose not to sample stays unsampled here.
    provider = TracerProvider(
        sampler=ALWAYS_OFF if processor is None else ParentBased(ALWAYS_ON),
        resource=resource,
        # shutdown_tracing flushes it (the API's shutdown, the worker's); the exit hook is
        # for any other process that configures tracing.
        shutdown_on_exit=processor is not None,
    )
    if processor is not None:
        provider.add_span_processor(processor)
    previous, _provider, _tracer = _provider, provider, provider.get_tracer(_SCOPE)
    _recording = processor is not None
    previous.shutdown()
    return provider


def shutdown_tracing() -> None:
    """Export the spans still batched and stop exporting (at process exit). Anything after
    still gets trace ids, as with tracing off (the single process stops its worker first)."""
    global _provider, _tracer, _recording
    previous, _provider = _provider, _unconfigured()
    _tracer, _recording = _provider.get_tracer(_SCOPE), False
    previous.shutdown()


#: Tracing off, in the API: the trace of the request being served, as (trace id, flags), which
#: the jobs it submits carry. No OpenTelemetry span or context is made for a request then:
#: most requests submit nothing, and those objects cost each one microseconds (P5 is a read
#: served in ~150 us of the API's time; docs/OBSERVABILITY.md has the figures).
_request_trace: ContextVar[tuple[int, int] | None] = ContextVar(
    "taskoverflow_request_trace", default=None
)


def recording() -> bool:
    """Whether spans are recorded and exported (an exporter is configured)."""
    return _recording


def enter_request(traceparent: str | None, tracestate: str | None) -> tuple[str, Token[Any]]:
    """Tracing off: make the request's trace (the one ``traceparent`` names, else a new one)
    current; its trace id (32 hex digits, for the logs) and the token ``leave_request`` takes.
    Its trace flags are the unrecorded span's (``start_span``): the sampled flag cleared."""
    parent = Context() if traceparent is None else parent_context(traceparent, tracestate)
    trace_id, flags = _unrecorded_trace(parent)
    return format(trace_id, "032x"), _request_trace.set((trace_id, flags))


def leave_request(token: Token[Any]) -> None:
    _request_trace.reset(token)


def _unrecorded_traceparent() -> str:
    """Tracing off: the ``traceparent`` of a new unrecorded span in the current trace (the
    request's; else the current span's, as in a worker; else a new trace)."""
    trace_id, flags = _request_trace.get() or _unrecorded_trace(None)
    return f"00-{trace_id:032x}-{_ids.generate_span_id():016x}-{flags:02x}"


def _unrecorded_trace(parent: Context | None) -> tuple[int, int]:
    """The trace id and flags of an unrecorded span whose parent is the span in ``parent``
    (None: the current context): the parent's trace, else a new one; the sampled flag
    cleared, as the SDK's ALWAYS_OFF sampler has it."""
    span = trace.get_current_span(parent).get_span_context()
    if span.is_valid:
        return span.trace_id, int(span.trace_flags & TraceFlags.RANDOM_TRACE_ID)
    return _ids.generate_trace_id(), int(TraceFlags.RANDOM_TRACE_ID)


def start_span(name: str, parent: Context, kind: SpanKind) -> Span:
    """A span of this process's tracer, child of the span in ``parent`` (if any; else a new
    trace). Not made current: the caller attaches it for as long as it runs."""
    if _recording:
        return _tracer.start_span(name, context=parent, kind=kind)
    # Tracing off: the span the SDK's ALWAYS_OFF sampler gives (not recorded; a new span id
    # in the parent's trace or in a new one; the sampled flag cleared), made directly. The
    # API starts one per request: this path costs about half of the SDK's general one.
    trace_id, flags = _unrecorded_trace(parent)
    context = SpanContext(
        trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(flags)
    )
    return NonRecordingSpan(context)


def parent_context(traceparent: object, tracestate: object = None) -> Context:
    """The context a span continues: the trace ``traceparent`` names, or none (a new trace)
    when it is missing or not a valid W3C traceparent. Never raises: bad trace data from a
    client or an old message must not fail a request or a job."""
    if not isinstance(traceparent, str):
        return Context()
    carrier = {"traceparent": traceparent}
    if isinstance(tracestate, str):
        carrier["tracestate"] = tracestate
    return PROPAGATOR.extract(carrier)


def traceparent_of(span: Span) -> str:
    """``span``'s context as a W3C ``traceparent`` (what a child elsewhere continues)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier["traceparent"]


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) a stored ``traceparent`` names; None if there is none."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None


def hex_ids(span: Span) -> tuple[str, str]:
    """``span``'s trace id and span id as they appear in logs and traceparents."""
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def messaging_system(broker: dramatiq.Broker) -> str:
    """The ``messaging.system`` span attribute for ``broker``."""
    if isinstance(broker, RedisBroker):
        return "redis"
    # A JobSQSBroker exists only if models.sqs was imported: look there, never import it
    # here (boto3 is memory a Redis deployment does not carry; docs/BENCHMARKS.md, P4).
    sqs = sys.modules.get("models.sqs")
    if sqs is not None and isinstance(broker, sqs.JobSQSBroker):
        return "aws_sqs"
    return "in_memory"


@contextmanager
def publishing(broker: dramatiq.Broker, queue_name: str, job_id: object) -> Iterator[str]:
    """A PRODUCER span around storing and sending job ``job_id``, a child of the current
    span (the request's); yields its ``traceparent``, which the job row and the message
    carry so the worker's span continues it. An exception (the broker refused) ends the
    span in error. Tracing off: only the ``traceparent`` of an unrecorded span in the
    request's trace."""
    if not _recording:
        yield _unrecorded_traceparent()
        return
    with _tracer.start_as_current_span(
        f"send {queue_name}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": messaging_system(broker),
            "messaging.operation.type": "send",
            "messaging.destination.name": queue_name,
            "taskoverflow.job.id": str(job_id),
        },
    ) as span:
        yield traceparent_of(span)

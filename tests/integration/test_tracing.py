"""One trace from the API request through the broker (Redis, SQS) to the worker: the spans,
the job row, the jobs resource and every log line of the request and of the job carry the
same trace id, with tracing on (spans kept by an in-memory exporter) and off alike."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from litestar.testing import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, Row, text

from api.app import create_app
from models import tracing
from models.log_config import configure_logging
from models.queue import TRACEPARENT_OPTION, job_message
from models.settings import LogSettings, Settings
from tests.conftest import make_settings, make_sqs_settings
from tests.integration.jobs import insert_job, insert_todos, job_row
from tests.waiting import wait_for_job
from tests.workers import consuming_worker, redis_worker
from workers.broker import build_worker_broker
from workers.reconciler import reconcile_and_send

#: A caller's own trace (the W3C specification's example ids), sampled: the API continues it.
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_NO_TRACE = "0" * 32


class Logs:
    """The process's log lines while the fixture is active, as the JSON objects they are."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]

    def access(self, method: str, path: str) -> dict[str, Any]:
        """The one access line of ``method path``."""
        (line,) = [
            line
            for line in self.lines()
            if line.get("logger") == "api.access"
            and line.get("method") == method
            and line.get("path") == path
        ]
        return line

    def of_job(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every line written while job ``job_id`` ran (its id bound to the thread)."""
        return [line for line in self.lines() if line.get("job_id") == str(job_id)]


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Our logging configuration (JSON, DEBUG), writing into memory instead of stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(LogSettings(format="json", level="DEBUG"), process="test")
    stream = io.StringIO()
    # The handler configure_logging installed: same formatter and processors, other stream.
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield Logs(stream)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test: every span recorded, handed to this exporter as it ends."""
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(settings.telemetry, process="test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


@pytest.fixture
def tracing_off(settings: Settings) -> Iterator[None]:
    """Tracing as deployed without OTEL_EXPORTER_OTLP_ENDPOINT: nothing recorded."""
    assert settings.telemetry.otlp_endpoint is None
    tracing.configure_tracing(settings.telemetry, process="test")
    yield
    tracing.shutdown_tracing()


@pytest.fixture(params=["redis", "sqs"])
def broker_settings(request: pytest.FixtureRequest, database_url: str, redis_url: str) -> Settings:
    if request.param == "redis":
        return make_settings(database_url)
    return make_sqs_settings(database_url, request.getfixturevalue("sqs_endpoint"))


def one(spans: InMemorySpanExporter, kind: SpanKind) -> ReadableSpan:
    (span,) = [span for span in spans.get_finished_spans() if span.kind == kind]
    return span


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def parent_span(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def stored(row: Row[Any]) -> tuple[str, str, int]:
    """The trace id, span id and flags of a job row's traceparent."""
    version, trace_id, span_id, flags = row.traceparent.split("-")
    assert version == "00"
    return trace_id, span_id, int(flags, 16)


def submit_and_run(
    settings: Settings, engine: Engine, headers: dict[str, str]
) -> tuple[uuid.UUID, dict[str, Any], Row[Any]]:
    """POST a calendar job to the app and let a real worker on ``settings``' broker run it:
    its id, its jobs resource answer and its row once finished."""
    insert_todos(engine, 3)
    with TestClient(create_app(settings)) as client:
        submitted = client.post("/api/v1/todos/ical", headers=headers)
        assert submitted.status_code == 202, submitted.text
        job_id = uuid.UUID(submitted.json()["task_id"])
        broker = build_worker_broker(settings, threads=2, run_reconciler=False)
        # Leaving the block stops the worker, which waits for the job's span to end.
        with consuming_worker(broker, settings, threads=2):
            row = wait_for_job(engine, job_id, timeout=30)
        job = client.get(f"/api/v1/jobs/{job_id}")
        assert job.status_code == 200, job.text
    assert row.status == "SUCCESS", row.error
    return job_id, job.json(), row


@pytest.mark.parametrize("caller", [None, CALLER_TRACEPARENT], ids=["new-trace", "caller-trace"])
def test_one_trace_from_the_request_through_the_broker_to_the_worker(
    broker_settings: Settings,
    engine: Engine,
    spans: InMemorySpanExporter,
    logs: Logs,
    caller: str | None,
):
    """Request span -> send span -> the worker's job span, one trace id, which the job row,
    the jobs resource and the log lines of both sides name too."""
    headers = {} if caller is None else {"traceparent": caller}
    job_id, job, row = submit_and_run(broker_settings, engine, headers)

    server = one(spans, SpanKind.SERVER)
    producer = one(spans, SpanKind.PRODUCER)
    consumer = one(spans, SpanKind.CONSUMER)
    trace_id = hex_trace(server)
    if caller is None:
        assert server.parent is None
        assert _TRACE_ID.fullmatch(trace_id)
        assert trace_id != _NO_TRACE
    else:
        assert (trace_id, parent_span(server)) == (CALLER_TRACE, CALLER_SPAN)
    assert {hex_trace(producer), hex_trace(consumer)} == {trace_id}
    assert parent_span(producer) == hex_span(server)
    assert parent_span(consumer) == hex_span(producer)

    system = "aws_sqs" if broker_settings.broker.is_sqs else "redis"
    assert server.name == "POST /api/v1/todos/ical"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/v1/todos/ical"
    assert server.attributes["http.response.status_code"] == 202
    assert producer.attributes is not None
    assert producer.attributes["messaging.system"] == system
    assert producer.attributes["messaging.destination.name"] == broker_settings.broker.queue_name
    assert consumer.name == "render_calendar process"
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.system"] == system
    assert consumer.attributes["taskoverflow.job.id"] == str(job_id)
    assert consumer.attributes["messaging.message.id"]
    assert consumer.status.status_code == StatusCode.UNSET

    # The row holds the send span's context, sampled: what a resend continues.
    trace_on_row, span_on_row, flags = stored(row)
    assert (trace_on_row, span_on_row) == (trace_id, hex_span(producer))
    assert flags & 1 == 1
    assert job["trace_id"] == trace_id

    assert logs.access("POST", "/api/v1/todos/ical")["trace_id"] == trace_id
    job_lines = logs.of_job(job_id)
    assert "job finished" in {line["event"] for line in job_lines}
    assert {(line["trace_id"], line["span_id"]) for line in job_lines} == {
        (trace_id, hex_span(consumer))
    }
    # Every line written during a request names its trace, whichever request it was.
    request_lines = [line for line in logs.lines() if "request_id" in line]
    assert request_lines
    assert all(_TRACE_ID.fullmatch(line.get("trace_id", "")) for line in request_lines)


def test_with_tracing_off_trace_ids_still_travel_and_are_logged(
    settings: Settings, engine: Engine, tracing_off: None, logs: Logs
):
    """No exporter: nothing is recorded, yet the row, the resource and the log lines of the
    request and of the job name one valid trace (marked not sampled)."""
    job_id, job, row = submit_and_run(settings, engine, {})
    trace_id, span_id, flags = stored(row)
    assert _TRACE_ID.fullmatch(trace_id)
    assert trace_id != _NO_TRACE
    assert flags & 1 == 0
    assert job["trace_id"] == trace_id
    assert logs.access("POST", "/api/v1/todos/ical")["trace_id"] == trace_id
    job_lines = logs.of_job(job_id)
    assert job_lines
    assert {line["trace_id"] for line in job_lines} == {trace_id}
    # The job's own span: a child of the one on the row, so an id of its own.
    (job_span,) = {line["span_id"] for line in job_lines}
    assert job_span != span_id


@pytest.mark.parametrize(
    "parent",
    [
        None,
        CALLER_TRACEPARENT,
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-00",  # not sampled
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-03",  # sampled, trace id random (Trace Context 2)
    ],
    ids=["root", "sampled", "unsampled", "random-flag"],
)
def test_with_tracing_off_a_span_is_the_one_the_sdk_would_make(
    tracing_off: None, parent: str | None
):
    """Tracing off takes a fast path around the SDK (once per request): its spans must be
    what the SDK's ALWAYS_OFF sampler makes, with the same flags, in the same trace."""
    sdk = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False).get_tracer("test")
    context = tracing.parent_context(parent)
    ours = tracing.start_span("GET", context, SpanKind.SERVER)
    theirs = sdk.start_span("GET", context=context, kind=SpanKind.SERVER)
    assert not ours.is_recording()
    made, expected = ours.get_span_context(), theirs.get_span_context()
    assert made.is_valid
    assert not made.is_remote
    assert (made.trace_flags, made.trace_state) == (expected.trace_flags, expected.trace_state)
    if parent is None:
        assert made.trace_id != expected.trace_id  # each a new trace
    else:
        assert made.trace_id == expected.trace_id == int(CALLER_TRACE, 16)
        assert made.span_id != int(CALLER_SPAN, 16)


@pytest.mark.parametrize(
    "parent",
    [
        None,
        CALLER_TRACEPARENT,
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-00",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-03",
        "00-zzzz-yyyy-01",
    ],
    ids=["root", "sampled", "unsampled", "random-flag", "garbage"],
)
def test_with_tracing_off_a_request_makes_no_span_yet_its_job_is_in_the_sdks_trace(
    settings: Settings, engine: Engine, tracing_off: None, logs: Logs, parent: str | None
):
    """Off, the API makes no span per request (only ids: models.tracing.enter_request); the
    job it submits still carries the trace id and flags the SDK's ALWAYS_OFF span would."""
    sdk = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False).get_tracer("test")
    expected = sdk.start_span("GET", context=tracing.parent_context(parent)).get_span_context()
    headers = {} if parent is None else {"traceparent": parent}
    _, job, row = submit_and_run(settings, engine, headers)
    trace_id, span_id, flags = stored(row)
    assert flags == int(expected.trace_flags)
    if expected.trace_id == int(CALLER_TRACE, 16):  # a valid caller's trace: continued
        assert trace_id == CALLER_TRACE
        assert span_id != CALLER_SPAN
    else:
        assert trace_id not in (CALLER_TRACE, _NO_TRACE)
    assert job["trace_id"] == trace_id
    assert logs.access("POST", "/api/v1/todos/ical")["trace_id"] == trace_id


@pytest.mark.parametrize(
    "traceparent",
    [
        None,  # sent before traces were carried
        "not a traceparent",
        f"00-{_NO_TRACE}-{CALLER_SPAN}-01",  # all-zero trace id: invalid
        f"{CALLER_TRACEPARENT}-extra",  # version 00 has exactly four parts
        "",
        42,
        {"traceparent": CALLER_TRACEPARENT},
    ],
    ids=["missing", "garbage", "zero-trace", "extra-part", "empty", "number", "object"],
)
def test_a_message_with_no_or_a_bad_traceparent_runs_in_a_new_trace(
    settings: Settings,
    engine: Engine,
    spans: InMemorySpanExporter,
    logs: Logs,
    traceparent: object,
):
    """Trace data never fails a job: the job runs, in a trace of its own, logged as such."""
    insert_todos(engine, 2)
    job_id = insert_job(engine)
    message = job_message(settings.broker.queue_name, "ical", job_id)
    if traceparent is not None:
        message = message.copy(options={TRACEPARENT_OPTION: traceparent})
    with redis_worker(settings) as broker:
        broker.enqueue(message)
        row = wait_for_job(engine, job_id, timeout=30)
    assert row.status == "SUCCESS", row.error
    consumer = one(spans, SpanKind.CONSUMER)
    assert consumer.parent is None
    trace_id = hex_trace(consumer)
    assert trace_id not in (_NO_TRACE, CALLER_TRACE)
    job_lines = logs.of_job(job_id)
    assert job_lines
    assert {line["trace_id"] for line in job_lines} == {trace_id}


def test_a_bad_traceparent_header_starts_a_new_trace(
    client: TestClient, engine: Engine, spans: InMemorySpanExporter
):
    """A client's malformed traceparent is ignored (a new trace), never an error."""
    response = client.post("/api/v1/todos/ical", headers={"traceparent": "00-zzzz-yyyy-01"})
    assert response.status_code == 202, response.text
    server = one(spans, SpanKind.SERVER)
    assert server.parent is None
    trace_id, _, _ = stored(job_row(engine, uuid.UUID(response.json()["task_id"])))
    assert trace_id == hex_trace(server)


def test_a_retry_is_sent_in_the_trace_of_the_request_that_asked_for_it(
    client: TestClient, engine: Engine, spans: InMemorySpanExporter
):
    """POST …/retry: the new job's row and message carry the retry request's trace; a
    refused retry (409) sends nothing, and its span is not in error (the client's mistake)."""
    failed = insert_job(engine, status="FAILURE", attempts=3)
    retried = client.post(
        f"/api/v1/jobs/{failed}/retry", headers={"traceparent": CALLER_TRACEPARENT}
    )
    assert retried.status_code == 202, retried.text
    new_job = retried.json()
    assert new_job["trace_id"] == CALLER_TRACE
    producer = one(spans, SpanKind.PRODUCER)
    assert hex_trace(producer) == CALLER_TRACE
    assert stored(job_row(engine, uuid.UUID(new_job["id"])))[:2] == (
        CALLER_TRACE,
        hex_span(producer),
    )

    spans.clear()
    again = client.post(f"/api/v1/jobs/{failed}/retry")
    assert again.status_code == 409, again.text
    # Refused before anything is sent (the client's mistake): no send span at all.
    assert [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER] == []
    server = one(spans, SpanKind.SERVER)
    assert server.name == "POST /api/v1/jobs/{job_id}/retry"
    assert server.status.status_code == StatusCode.UNSET


def test_a_resent_job_continues_the_trace_on_its_row(
    settings: Settings, engine: Engine, spans: InMemorySpanExporter
):
    """A job the reconciler sends again (its message lost) runs in the trace it was
    submitted in: the resend carries the traceparent stored on the row."""
    insert_todos(engine, 2)
    job_id = insert_job(engine, age_s=settings.jobs.pending_grace_s + 5)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET traceparent = :traceparent WHERE id = :id"),
            {"traceparent": CALLER_TRACEPARENT, "id": job_id},
        )
    with redis_worker(settings) as broker:
        resent = reconcile_and_send(engine, broker, settings).resent
        assert [job.id for job in resent] == [job_id]
        assert wait_for_job(engine, job_id, timeout=30).status == "SUCCESS"
    consumer = one(spans, SpanKind.CONSUMER)
    assert (hex_trace(consumer), parent_span(consumer)) == (CALLER_TRACE, CALLER_SPAN)

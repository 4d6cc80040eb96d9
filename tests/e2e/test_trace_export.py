"""Traces exported over OTLP/HTTP by the real API and worker processes, to a collector the
test runs on 127.0.0.1: one trace, from both services, delivered when they shut down."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.processes import Process, free_port, start_api, start_worker
from tests.waiting import wait_for, wait_for_task

pytestmark = pytest.mark.e2e

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"

#: OTLP span kinds (opentelemetry/proto/trace/v1/trace.proto).
SERVER, PRODUCER, CONSUMER = 2, 4, 5


class Collector:
    """The receiving end of OTLP/HTTP (protobuf) traces: every span posted to /v1/traces,
    with the service.name of the resource it came with."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: set[str] = set()
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(self.path, ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is for failures

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def receive(self, path: str, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.paths.add(path)
            for resource_spans in request.resource_spans:
                service = next(
                    attribute.value.string_value
                    for attribute in resource_spans.resource.attributes
                    if attribute.key == "service.name"
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "kind": span.kind,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                            }
                        )

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.spans)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    yield collector
    collector.stop()


def test_api_and_worker_export_one_trace_when_they_shut_down(
    service_env: dict[str, str], processes: list[Process], collector: Collector
):
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, both processes record the job's trace and
    export it; the batch delay is longer than the test, so what arrives is what each
    process flushed as it stopped (the worker's shutdown hook, the API's exit)."""
    env = {
        **service_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # read by the OpenTelemetry SDK itself
    }
    port = free_port()
    api = start_api(env, port)
    processes.append(api)
    worker = start_worker(env, threads=2)
    processes.append(worker)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        submitted = client.post("/api/v1/todos/ical", headers={"traceparent": CALLER_TRACEPARENT})
        assert submitted.status_code == 202, submitted.text
        status = wait_for_task(client.get, submitted.json()["task_url"])
        assert status["task_status"] == "SUCCESS", status
        job = client.get(f"/api/v1/jobs/{status['task_id']}").json()
    assert job["trace_id"] == CALLER_TRACE
    assert collector.received() == []  # batched, not yet sent

    assert worker.stop() == 0, worker.log()
    api.stop()  # uvicorn ends by re-raising SIGTERM: its exit status says only that
    spans = wait_for(
        lambda: [span for span in collector.received() if span["trace_id"] == CALLER_TRACE],
        lambda seen: {span["kind"] for span in seen} >= {SERVER, PRODUCER, CONSUMER},
        timeout=10,
        what="the job's server, send and process spans at the collector",
    )
    assert collector.paths == {"/v1/traces"}
    (server,) = [span for span in spans if span["kind"] == SERVER]
    (producer,) = [span for span in spans if span["kind"] == PRODUCER]
    (consumer,) = [span for span in spans if span["kind"] == CONSUMER]
    assert (server["service"], server["name"]) == ("taskoverflow-api", "POST /api/v1/todos/ical")
    assert producer["service"] == "taskoverflow-api"
    assert producer["parent_id"] == server["span_id"]
    assert (consumer["service"], consumer["name"]) == (
        "taskoverflow-worker",
        "render_calendar process",
    )
    assert consumer["parent_id"] == producer["span_id"]

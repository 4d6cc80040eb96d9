"""The API's Prometheus ``/metrics``: requests by route and status, and the job backlog.

Per request (counted by the per-request layer, api.request_log, outside routing and the
Idempotency-Key layer, so requests those answer count too; not a layer of its own: each
ASGI layer costs every request a coroutine and a wrapped ``send``):

- ``taskoverflow_http_requests_total{method,route,status}``
- ``taskoverflow_http_request_duration_seconds{method,route}`` (a histogram; an event
  stream's duration is the stream's)

``route`` is the path template Litestar routed to (``/api/v1/jobs/{job_id}``), never the raw
path, whose job ids would make a new series per job; what routing refused (404, 405) is
``unmatched``. Methods outside RFC 9110's are ``OTHER``: a label takes only known values.

Counting is plain integers in one dictionary per process, added up in Python's own types
(every request runs on the event loop's thread, so nothing else touches them); the metric
families are built only when scraped. prometheus_client's labelled metrics would cost a lock
and a key build per value on every request (docs/BENCHMARKS.md, P5).

At each scrape, from the sources themselves: ``taskoverflow_jobs_unfinished{status}`` (one
indexed statement, ix_jobs_status_enqueued_at) and ``taskoverflow_broker_messages{state}``
(``api.backlog``, cached for a couple of seconds); ``taskoverflow_metrics_source_up{source}``
says whether each could be read.

Several uvicorn processes (UVICORN_WORKERS > 1) each count their own requests: a scrape
answers for the process that took it. The deployments run one process per container (ECS,
compose) and scale by containers, each scraped on its own (docs/OBSERVABILITY.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.types import HTTPScope
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from api.backlog import BacklogReader
from api.console_queries import UNFINISHED, UNFINISHED_COUNTS
from api.database import Database, DatabaseUnavailable
from api.request_log import RequestObserver

#: Requests take from under a millisecond (a status read) to seconds (a large result).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BUCKET_LABELS = [*(repr(float(b)) for b in DURATION_BUCKETS), "+Inf"]

#: Prometheus's text format 0.0.4 (Litestar adds the charset, utf-8).
EXPOSITION_TYPE = "text/plain; version=0.0.4"

#: The route label of a request that matched no route.
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})

#: Finds the path template of (path, method); raises if there is none (Litestar's router).
RouteOf = Callable[[str, str], str]


class _Timings:
    """One (method, route)'s duration histogram: a count per bucket (not yet cumulative)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0


class HttpMetrics(Collector):
    """This process's request counts and durations, collected as Prometheus metrics."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._timings: dict[tuple[str, str], _Timings] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        timings = self._timings.get((method, route))
        if timings is None:
            timings = self._timings[(method, route)] = _Timings()
        # bisect_left: the first bound >= seconds, as Prometheus's le ("less or equal") has it.
        timings.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        timings.total += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "taskoverflow_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(self._requests.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        durations = HistogramMetricFamily(
            "taskoverflow_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route",
            labels=["method", "route"],
        )
        for (method, route), timings in sorted(self._timings.items()):
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, timings.counts, strict=True):
                cumulative += count
                buckets.append((label, float(cumulative)))
            durations.add_metric([method, route], buckets, timings.total)
        yield durations

    def observer(self, route_of: RouteOf) -> RequestObserver:
        """What the per-request layer (api.request_log) calls as each request ends: counts
        it under the route template it was routed to."""
        observe = self.observe

        def observe_request(
            scope: HTTPScope, method: str, path: str, status: int, seconds: float
        ) -> None:
            route = scope.get("path_template")
            if route is None:
                # Not routed on this scope: answered before routing (Idempotency-Key replays
                # and refusals), routed on a copy (HEAD, served as a GET), or refused by
                # routing (404, 405: the lookup raises again).
                try:
                    route = route_of(path, "GET" if method == "HEAD" else method)
                except Exception:
                    route = UNMATCHED
            observe(method if method in _METHODS else "OTHER", route, status, seconds)

        return observe_request


def _unfinished(counts: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    by_status = dict(counts)
    gauge = GaugeMetricFamily(
        "taskoverflow_jobs_unfinished",
        "Jobs not yet finished, by status (read from the database at each scrape)",
        labels=["status"],
    )
    for status in UNFINISHED:
        gauge.add_metric([status.value], by_status.get(status.value, 0))
    return gauge


class _Snapshot(Collector):
    """Metric families already built (the backlog as read for this scrape)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


async def _backlog(db: Database, backlog: BacklogReader | None) -> list[Metric]:
    up = GaugeMetricFamily(
        "taskoverflow_metrics_source_up",
        "Whether this scrape could read the source of the backlog gauges (1) or not (0)",
        labels=["source"],
    )
    metrics: list[Metric] = [up]
    try:
        rows = await db.fetch_all(UNFINISHED_COUNTS)
    except DatabaseUnavailable:
        up.add_metric(["database"], 0)
    else:
        up.add_metric(["database"], 1)
        metrics.append(_unfinished((str(row[0]), int(row[1])) for row in rows))
    depth = None if backlog is None else await backlog.broker_depth()
    up.add_metric(["broker"], 0 if depth is None else 1)
    if depth is not None:
        messages = GaugeMetricFamily(
            "taskoverflow_broker_messages",
            "Job messages in the broker by state: ready, in_flight (held by a worker), "
            "delayed (a retry's backoff), dead_lettered",
            labels=["state"],
        )
        states = {"ready": depth.ready, "in_flight": depth.in_flight, "delayed": depth.delayed}
        if depth.dead_lettered is not None:
            states["dead_lettered"] = depth.dead_lettered
        for state, count in states.items():
            messages.add_metric([state], count)
        metrics.append(messages)
    return metrics


def metrics_route(
    http: HttpMetrics, db: Database, backlog: BacklogReader | None
) -> HTTPRouteHandler:
    """``GET /metrics`` (Prometheus text format; not part of the API's OpenAPI description)."""
    process = ProcessCollector(registry=None)  # CPU, memory, open files of this process

    @get("/metrics", include_in_schema=False)
    async def metrics() -> Response[bytes]:
        registry = CollectorRegistry(auto_describe=False)
        for collector in (http, process, _Snapshot(await _backlog(db, backlog))):
            registry.register(collector)
        return Response(generate_latest(registry), media_type=EXPOSITION_TYPE)

    return metrics

"""Flood harness: one client misbehaves as hard as it can, another keeps its normal pace.

    python -m tests.load.flood --quiet-s 20 --flood-s 60      # make flood

Real processes on loopback: two API processes (uvicorn, as a load balancer would spread
requests over tasks) sharing Postgres and one Redis namespace, one worker pool. The test
plays the load balancer too: each client's address travels in X-Forwarded-For, believed
from 127.0.0.1 only (TRUSTED_PROXIES), so the two clients are two clients.

- The steady client does the calendar session at a fixed pace (one a second): list the
  todos, submit an export, poll its status until SUCCESS, download the calendar. It honours
  Retry-After, as a well-behaved client does.
- The flooder, from 0 s of the flood phase, creates todos and submits exports from many
  connections as fast as it can and never waits, whatever it is told.

Phases: the steady client alone (quiet), then both (flood). Prints one JSON summary and
exits 1 if a promise broke: the steady client's p95 latency under the flood more than 2x
the quiet one, any answer >= 500, the backlog above JOBS_MAX_UNFINISHED or the todos above
TODOS_MAX at any sample, the flooder never refused with 429, a 429 without Retry-After.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine, create_engine, text

from models.settings import normalise_database_url
from tests.processes import Process, free_port, start_api, start_worker
from tests.services import migrate, redis_url, scratch_database

#: The limits under test, small enough that a minute's flood meets every one of them.
LIMITS = {
    "TODOS_MAX": "1000",
    "JOBS_MAX_UNFINISHED": "12",
    "JOBS_MAX_UNFINISHED_PER_CLIENT": "5",
    "BACKLOG_RETRY_AFTER_S": "2",
    "RATE_LIMIT_WRITES_PER_MINUTE": "600",
    "RATE_LIMIT_READS_PER_MINUTE": "6000",
}
#: Todos there before the run (each export renders them all).
SEEDED_TODOS = 200
STEADY = "198.51.100.10"
FLOODER = "203.0.113.66"


@dataclass
class Client:
    """What one client saw."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    without_retry_after: int = 0
    sessions_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: httpx.Response, started: float) -> None:
        with self.lock:
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.statuses[response.status_code] += 1
            if response.status_code in (429, 503) and "retry-after" not in response.headers:
                self.without_retry_after += 1


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def steady_client(bases: list[str], client: Client, until: float, period_s: float) -> None:
    """Calendar sessions at a steady pace, spread over the API processes."""
    headers = {"X-Forwarded-For": STEADY}
    turn = 0
    with httpx.Client(timeout=30, headers=headers) as http:

        def call(method: str, url: str) -> httpx.Response:
            nonlocal turn
            while True:
                if not url.startswith("http"):
                    url = bases[turn % len(bases)] + url
                turn += 1
                started = time.perf_counter()
                response = http.request(method, url)
                client.record(response, started)
                if response.status_code not in (429, 503):
                    return response
                time.sleep(float(response.headers.get("retry-after", "1")))  # honoured

        while time.monotonic() < until:
            began = time.monotonic()
            call("GET", "/api/v1/todos")
            submitted = call("POST", "/api/v1/todos/ical")
            if submitted.status_code != 202:
                client.errors.append(f"submit {submitted.status_code}: {submitted.text[:200]}")
                continue
            status_url = submitted.json()["task_url"]
            while True:
                status = call("GET", status_url).json()
                if status["task_status"] in ("SUCCESS", "FAILURE"):
                    break
                time.sleep(0.1)
            if status["task_status"] != "SUCCESS":
                client.errors.append(f"job {status}")
            elif "BEGIN:VCALENDAR" not in call("GET", status["result_url"]).text:
                client.errors.append("result is not a calendar")
            client.sessions_s.append(time.monotonic() - began)
            time.sleep(max(0.0, period_s - (time.monotonic() - began)))


def flooder(bases: list[str], client: Client, until: float, connections: int) -> None:
    """Todos and exports from ``connections`` connections, as fast as they go."""

    def hammer(n: int) -> None:
        with httpx.Client(timeout=30, headers={"X-Forwarded-For": FLOODER}) as http:
            i = 0
            while time.monotonic() < until:
                base = bases[(n + i) % len(bases)]
                started = time.perf_counter()
                if i % 2:
                    response = http.post(f"{base}/api/v1/todos/ical")
                else:
                    response = http.post(
                        f"{base}/api/v1/todos",
                        json={"title": f"flood {n}-{i}", "deadline_at": "2031-01-01T00:00:00"},
                    )
                client.record(response, started)
                i += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def flooder_process(bases: list[str], until: float, connections: int, nice: int) -> Client:
    """The flooder in a process of its own, ``nice``: on this 2-core machine the attacking
    client shares the CPU with the service it attacks, which a real one (elsewhere on the
    network) does not; at normal priority its own Python threads would slow the steady
    client's requests as much as the service's answers to it do."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        os.nice(nice)
        client = Client()
        flooder(bases, client, until, connections)
        results.put((client.latencies_ms, dict(client.statuses), client.without_retry_after))

    process = context.Process(target=child)
    process.start()
    latencies, statuses, without = results.get()
    process.join()
    client = Client(latencies_ms=latencies, without_retry_after=without)
    client.statuses.update(statuses)
    return client


def sampler(engine: Engine, until: float, maxima: dict[str, int]) -> None:
    """The backlog and the tables' sizes, every 0.2 s, from the database's point of view."""
    query = text(
        "SELECT (SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'STARTED', 'RETRY')),"
        " (SELECT count(*) FROM todos), (SELECT count(*) FROM jobs)"
    )
    while time.monotonic() < until:
        with engine.connect() as conn:
            unfinished, todos, jobs = conn.execute(query).one()
        for name, value in (("unfinished_jobs", unfinished), ("todos", todos), ("jobs", jobs)):
            maxima[name] = max(maxima.get(name, 0), int(value))
        time.sleep(0.2)


def summary(client: Client) -> dict:  # type: ignore[type-arg]
    return {
        "requests": len(client.latencies_ms),
        "statuses": dict(sorted(client.statuses.items())),
        "p50_ms": round(percentile(client.latencies_ms, 50), 1),
        "p95_ms": round(percentile(client.latencies_ms, 95), 1),
        "sessions": len(client.sessions_s),
        "session_p95_s": round(percentile(client.sessions_s, 95), 2),
        "errors": client.errors[:5],
    }


def run(  # type: ignore[type-arg]
    quiet_s: float, flood_s: float, connections: int, nice: int = 10
) -> dict:
    with ExitStack() as stack:
        database_url = stack.enter_context(scratch_database("taskoverflow_flood"))
        migrate(database_url)
        engine = create_engine(normalise_database_url(database_url))
        stack.callback(engine.dispose)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO todos (title, completed, deadline_at, created_at, updated_at)"
                    " SELECT 'seed ' || i, false, now() + i * interval '1 hour', now(), now()"
                    " FROM generate_series(1, :n) AS i"
                ),
                {"n": SEEDED_TODOS},
            )
        env = {
            "DATABASE_URL": database_url,
            "BROKER_URL": redis_url(),
            "BROKER_NAMESPACE": f"flood_{time.time_ns()}",
            "LOG_FORMAT": "json",
            "WORKER_METRICS_PORT": "0",
            "TRUSTED_PROXIES": "127.0.0.1/32",
            **LIMITS,
        }
        processes: list[Process] = []
        stack.callback(lambda: [p.stop() for p in processes])
        bases = []
        for _ in range(2):
            port = free_port()
            processes.append(start_api(env, port))
            bases.append(f"http://127.0.0.1:{port}")
        processes.append(start_worker(env, threads=4))

        quiet = Client()
        steady_client(bases, quiet, time.monotonic() + quiet_s, period_s=1.0)

        loud, flooded = Client(), []
        maxima: dict[str, int] = {}
        until = time.monotonic() + flood_s
        jobs: list[Callable[[], None]] = [
            lambda: steady_client(bases, loud, until, period_s=1.0),
            lambda: flooded.append(flooder_process(bases, until, connections, nice)),
            lambda: sampler(engine, until, maxima),
        ]
        threads = [threading.Thread(target=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (flood,) = flooded

    quiet_p95 = percentile(quiet.latencies_ms, 95)
    loud_p95 = percentile(loud.latencies_ms, 95)
    every = [*quiet.statuses.elements(), *loud.statuses.elements(), *flood.statuses.elements()]
    result = {
        "quiet": summary(quiet),
        "steady_under_flood": summary(loud),
        "flooder": summary(flood),
        "p95_ratio": round(loud_p95 / quiet_p95, 2) if quiet_p95 else None,
        "answers_5xx": sum(1 for s in every if s >= 500 and s != 503),
        "answers_503": sum(1 for s in every if s == 503),
        "refusals_without_retry_after": quiet.without_retry_after
        + loud.without_retry_after
        + flood.without_retry_after,
        "maxima": maxima,
        "limits": {k: int(v) for k, v in LIMITS.items()},
        "flooder_nice": nice,
    }
    result["broken"] = broken(result)
    return result


def broken(result: dict) -> list[str]:  # type: ignore[type-arg]
    limits, maxima = result["limits"], result["maxima"]
    problems = []
    if result["p95_ratio"] is None or result["p95_ratio"] > 2:
        problems.append(f"steady p95 {result['p95_ratio']}x the quiet run's (limit 2x)")
    if result["answers_5xx"]:
        problems.append(f"{result['answers_5xx']} answers >= 500")
    if maxima.get("unfinished_jobs", 0) > limits["JOBS_MAX_UNFINISHED"]:
        problems.append(f"backlog reached {maxima['unfinished_jobs']}")
    if maxima.get("todos", 0) > limits["TODOS_MAX"]:
        problems.append(f"todos reached {maxima['todos']}")
    if not result["flooder"]["statuses"].get(429):
        problems.append("the flooder was never refused with 429")
    if result["refusals_without_retry_after"]:
        problems.append("a 429/503 without Retry-After")
    for name in ("quiet", "steady_under_flood"):
        if result[name]["errors"] or result[name]["statuses"].get(429):
            problems.append(f"the steady client ({name}) was refused or failed")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-s", type=float, default=20)
    parser.add_argument("--flood-s", type=float, default=60)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--flooder-nice", type=int, default=10, help="the flooder's niceness (0: none)"
    )
    args = parser.parse_args()
    result = run(args.quiet_s, args.flood_s, args.connections, args.flooder_nice)
    print(json.dumps(result, indent=2))
    return 1 if result["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())

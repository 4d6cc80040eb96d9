"""Calendar-job load client for any server that keeps the TaskOverflow API (docs/API.md).

    python ops/bench/jobs_client.py http://127.0.0.1:6402 --jobs 300 --concurrency 16 --todos 20

Sets the server's todo count to exactly ``--todos`` through the API (it deletes todos beyond
it: point it at a benchmark database only), then runs ``--jobs`` calendar jobs with at most
``--concurrency`` in flight. Each job is timed from its POST to the status poll that first
reports SUCCESS or FAILURE (polled every ``--poll-ms``); its result is then fetched. Prints one
JSON line: jobs/s over the whole run, and the latency percentiles.

The client is aiohttp: it costs a fraction of httpx's CPU per request, so on a 2-core machine
it does not cap what it measures. Every system in one `make bench` run is driven by this same
client, so their figures compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp


async def set_todo_count(session: aiohttp.ClientSession, base: str, count: int) -> None:
    async with session.get(f"{base}/api/v1/todos") as response:
        todos: list[dict[str, Any]] = await response.json()
    gate = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        body = {
            "title": f"Todo {i}",
            "description": f"benchmark todo {i}",
            "deadline_at": f"2027-0{1 + i % 9}-1{i % 10}T09:30:00",
        }
        async with gate, session.post(f"{base}/api/v1/todos", json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"create: {response.status} {await response.text()}")

    async def delete(todo_id: int) -> None:
        async with gate, session.delete(f"{base}/api/v1/todos/{todo_id}") as response:
            if response.status != 200:
                raise RuntimeError(f"delete: {response.status} {await response.text()}")

    await asyncio.gather(
        *(create(i) for i in range(len(todos), count)),
        *(delete(todo["id"]) for todo in todos[count:]),
    )


async def one_job(
    session: aiohttp.ClientSession, base: str, poll_s: float
) -> tuple[str, float, int]:
    """(final status, seconds from POST to the final status, result size in bytes)."""
    started = time.perf_counter()
    async with session.post(f"{base}/api/v1/todos/ical") as response:
        if response.status != 202:
            raise RuntimeError(f"submit: {response.status} {await response.text()}")
        status_url = (await response.json())["task_url"]
    while True:
        async with session.get(status_url) as response:
            status = await response.json()
        if status.get("task_status") in ("SUCCESS", "FAILURE"):
            took = time.perf_counter() - started
            async with session.get(status["result_url"]) as response:
                size = len(await response.read())
            return status["task_status"], took, size
        await asyncio.sleep(poll_s)


def percentile(sorted_values: list[float], p: int) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100)[p - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=args.concurrency + 32)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await set_todo_count(session, args.base, args.todos)
        in_flight = asyncio.Semaphore(args.concurrency)

        async def bounded() -> tuple[str, float, int]:
            async with in_flight:
                return await one_job(session, args.base, args.poll_ms / 1000)

        started = time.perf_counter()
        results = await asyncio.gather(*(bounded() for _ in range(args.jobs)))
        wall = time.perf_counter() - started
    latencies = sorted(took for _, took, _ in results)
    return {
        "base": args.base,
        "jobs": args.jobs,
        "ok": sum(1 for status, _, _ in results if status == "SUCCESS"),
        "todos": args.todos,
        "concurrency": args.concurrency,
        "wall_s": round(wall, 3),
        "jobs_per_s": round(args.jobs / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "result_bytes": results[0][2],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("base", help="e.g. http://127.0.0.1:6402")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--todos", type=int, default=20)
    parser.add_argument("--poll-ms", type=float, default=20)
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    print(json.dumps(summary))
    return 0 if summary["ok"] == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark's workloads at size (ours alone): P8, one 1,000,000-todo calendar, and P9,
the reads on tables of up to a million jobs and todos. Each also draws its growth plot.

Rows are added in SQL by ops/dev/fill_tables.py (minutes through the API); the jobs and
todos that are read are real ones, made through the API.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import plots
from system import (
    API,
    BIN,
    OURS,
    OURS_DB,
    OURS_DB_URL,
    ROOT,
    WORKERS,
    peak_rss_mib,
    pids_matching,
    psql,
    sampling_rss,
    with_children,
)
from table import Bench

#: The calendar sizes of the growth plot; P8's own (--p8-todos) is the last.
GROWTH_SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
#: P9's table sizes after the small one (rows in jobs and in todos, each).
READ_SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: P9's small tables: this many todos, and as many jobs submitted through the API.
SMALL = 100
MB = 1e6


# --- data ----------------------------------------------------------------------------------


def fill(*, todos: int = 0, jobs: int = 0) -> None:
    """Tops the tables up to these counts (fill_tables.py; a larger table is left alone)."""
    subprocess.run(
        [str(BIN / "python"), "ops/dev/fill_tables.py", "--todos", str(todos), "--jobs", str(jobs)],
        cwd=ROOT,
        env={"PATH": str(BIN), "DATABASE_URL": OURS_DB_URL},
        check=True,
        capture_output=True,
        timeout=1800,
    )


# --- the API --------------------------------------------------------------------------------


def call(method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"{OURS}{path}", method=method)  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback)
        return response.status, json.loads(response.read())


@dataclass
class Job:
    id: str
    status: str
    #: From the POST to the status poll that first said SUCCESS or FAILURE.
    seconds: float


def run_job(poll_s: float = 0.02, timeout_s: float = 900) -> Job:
    """One calendar job through the API, polled as jobs_client.py polls."""
    started = time.perf_counter()
    _, created = call("POST", "/api/v1/todos/ical")
    job_id = created["task_id"]
    while time.perf_counter() - started < timeout_s:
        _, status = call("GET", f"/api/v1/todos/ical/{job_id}/status")
        if status["task_status"] in ("SUCCESS", "FAILURE"):
            return Job(job_id, status["task_status"], time.perf_counter() - started)
        time.sleep(poll_s)
    return Job(job_id, "TIMEOUT", time.perf_counter() - started)


@dataclass
class Download:
    content_encoding: str
    seconds: float
    #: Bytes received (compressed, if the server compressed them).
    wire_bytes: int
    #: Bytes of iCalendar text, once decompressed.
    text_bytes: int

    @property
    def text_mb_per_s(self) -> float:
        return self.text_bytes / MB / self.seconds


def download(path: str, accept_encoding: str) -> Download:
    """The whole result, read a MiB at a time; a gzip body is decompressed as it comes (the
    server may or may not compress, whatever the client asks)."""
    headers = {"Accept-Encoding": accept_encoding}
    request = urllib.request.Request(f"{OURS}{path}", headers=headers)  # noqa: S310 (loopback)
    wire = text = 0
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 (loopback)
        encoding = response.headers.get("Content-Encoding") or "identity"
        gunzip = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        while chunk := response.read(1 << 20):
            wire += len(chunk)
            text += len(gunzip.decompress(chunk)) if gunzip else len(chunk)
    return Download(encoding, time.perf_counter() - started, wire, text)


# --- P8: one 1,000,000-todo calendar, and the growth of time and memory with size ----------


def calendar_at(todos: int) -> dict[str, Any]:
    """One job on exactly ``todos`` todos (the table holds at most that many): its time and
    the largest VmRSS of a worker process while it ran (VmHWM would count earlier jobs)."""
    fill(todos=todos)
    with sampling_rss(pids_matching(WORKERS)) as trace:
        job = run_job()
    return {
        "todos": todos,
        "job": asdict(job),
        "post_to_success_s": round(job.seconds, 4),
        "worker_peak_rss_mib": trace.peak_mib and round(trace.peak_mib, 1),
        "rss_samples": trace.samples,
    }


def p8(b: Bench) -> None:
    top = b.args.p8_todos
    sizes = sorted({n for n in GROWTH_SIZES if n < top} | {top})
    psql(OURS_DB, "TRUNCATE todos RESTART IDENTITY")
    b.ours.restart_workers()
    # A new worker's first job also pays for its first connection: not a size's cost.
    fill(todos=sizes[0])
    run_job()
    points = [calendar_at(n) for n in sizes[:-1]]
    fill(todos=top)  # outside the restart below: the pool waits for nothing
    # A fresh pool: its high-water mark (VmHWM) is this job's alone.
    b.ours.restart_workers()
    point = calendar_at(top)
    points.append(point)
    hwm = peak_rss_mib(WORKERS)
    raw: dict[str, Any] = {"points": points, "worker_vmhwm_mib": hwm}
    job = point["job"]
    plain = packed = None
    api_growth: float | None = None
    if job["status"] == "SUCCESS":
        result = f"/api/v1/todos/ical/{job['id']}/result"
        # Every API process (uvicorn and its workers): whichever serves the download.
        with sampling_rss(with_children(pids_matching(API))) as api:
            plain = download(result, "identity")
        api_growth = api.growth_mib
        packed = download(result, "gzip")
        raw |= {
            "identity": asdict(plain),
            "gzip": asdict(packed),
            "api_rss_mib": {"before": api.before, "peak": api.peak, "samples": api.samples},
        }
    b.raw["P8"] = raw
    label = f"one {top:,}-todo calendar"
    rows: list[tuple[str, float | None, str]] = [
        ("POST -> SUCCESS s", point["post_to_success_s"], "-"),
        ("worker peak RSS MiB (VmHWM, fresh pool)", hwm, "abs<=256"),
        ("API RSS growth MiB while serving it", api_growth, "abs<=64"),
        ("download MB/s (identity, text)", plain.text_mb_per_s if plain else None, "abs>=50"),
        ("result MB (text)", plain.text_bytes / MB if plain else None, "-"),
        (
            f"MB on the wire, Accept-Encoding: gzip (sent: {packed and packed.content_encoding})",
            packed.wire_bytes / MB if packed else None,
            "-",
        ),
    ]
    for metric, value, target in rows:
        b.add("P8", label, metric, None, value, target, seed_applies=False)
    if job["status"] != "SUCCESS":
        b.notes.append(f"P8: the job ended {job['status']}: nothing to download.")
    b.notes.append(
        "P8: the seed design is not run: its P4 (100,000 todos) takes 17-35 s on these machines "
        "and grows about linearly, so a 1,000,000-todo calendar would take minutes and GBs."
    )
    b.raw.setdefault("growth", {})["calendar"] = points  # type: ignore[index]
    drawn = plots.calendar_growth(points, b.args.plots / "bench-calendar-growth.png")
    print(f"  drew {drawn}", flush=True)


# --- P9: reads at size ---------------------------------------------------------------------

#: wrk's summary at the end of a run, as one JSON line (wrk prints no p95 itself).
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"p50_us": %.1f, "p95_us": %.1f, "p99_us": %.1f, "requests": %d, "seconds": %.3f, '
    .. '"non2xx": %d, "errors": %d}\\n',
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


#: P9's load: two connections, so each read is timed as it is served rather than queued
#: behind fifteen others (at -c16 the p95 measured the queue: the machine's load, not the
#: read); three short rounds per size, the endpoints taking turns, and the median taken.
WRK_CONNECTIONS, ROUNDS = 2, 3


def wrk(path: str, seconds: float) -> dict[str, float]:
    """wrk -t1 -c2 against one URL: p50, p95 and p99 in ms, requests/s, failures."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_DONE)
        script.flush()
        out = subprocess.run(
            [  # noqa: S607 (wrk from PATH, as api_rps.sh runs it)
                "wrk",
                "-t1",
                f"-c{WRK_CONNECTIONS}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                script.name,
                OURS + path,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    line = next(x for x in out.stdout.splitlines() if x.startswith('{"p50_us"'))
    summary = json.loads(line)
    return {
        "p50_ms": round(summary["p50_us"] / 1000, 3),
        "p95_ms": round(summary["p95_us"] / 1000, 3),
        "p99_ms": round(summary["p99_us"] / 1000, 3),
        "rps": round(summary["requests"] / summary["seconds"], 1),
        "failed": summary["non2xx"] + summary["errors"],
    }


def median_of_rounds(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (failures summed)."""
    merged = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    merged["failed"] = sum(run["failed"] for run in runs)
    return merged


def honours_limit() -> bool:
    """Whether GET /api/v1/todos knows ?limit= (an API without it ignores it: every row)."""
    _, page = call("GET", "/api/v1/todos?limit=1")
    return len(page) == 1


def p9(b: Bench) -> None:
    psql(OURS_DB, "TRUNCATE todos, jobs, job_attempts RESTART IDENTITY")
    fill(todos=SMALL)
    # Real jobs with real results: the ids read at every size.
    jobs = [run_job() for _ in range(SMALL)]
    job_id = jobs[SMALL // 2].id
    middle = f"SELECT id FROM todos ORDER BY id OFFSET {SMALL // 2} LIMIT 1"  # noqa: S608
    todo_id = int(psql(OURS_DB, middle))
    paging = honours_limit()
    #: name: (what it is, the path as documented, the path read)
    endpoints = {
        "status": (
            "job status",
            "/api/v1/todos/ical/{id}/status",
            f"/api/v1/todos/ical/{job_id}/status",
        ),
        "job": ("result metadata", "/api/v1/jobs/{id}", f"/api/v1/jobs/{job_id}"),
        "jobs": ("job list", "/api/v1/jobs?page_size=20", "/api/v1/jobs?page_size=20"),
        "todo": ("todo by id", "/api/v1/todos/{id}", f"/api/v1/todos/{todo_id}"),
        "todos": ("todo page", "/api/v1/todos?limit=100", "/api/v1/todos?limit=100"),
    }
    sizes = [SMALL, *(n for n in READ_SIZES if n <= b.args.p9_max)]
    latency: dict[str, dict[int, dict[str, float]]] = {name: {} for name in endpoints}
    for size in sizes:
        fill(todos=size, jobs=size)
        # As autovacuum would leave a table that has been there a while: visibility map set,
        # and nothing of it running while wrk measures.
        psql(OURS_DB, "VACUUM (ANALYZE) todos, jobs, job_attempts")
        measured = {
            name: path
            for name, (_, _, path) in endpoints.items()
            # without ?limit every row comes back: not a page
            if not (name == "todos" and not paging and size > 1_000)
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in measured}
        for _ in range(ROUNDS):
            for name, path in measured.items():
                runs[name].append(wrk(path, b.args.p9_wrk_s / ROUNDS))
        for name in measured:
            latency[name][size] = median_of_rounds(runs[name])
            figures = latency[name][size]
            print(
                f"  P9 {size:>9,} rows  {name:<6} p50 {figures['p50_ms']:.2f} ms, "
                f"p95 {figures['p95_ms']:.2f} ms, {figures['rps']:,.0f} req/s",
                flush=True,
            )
    b.raw["P9"] = {"endpoints": endpoints, "sizes": sizes, "limit_honoured": paging}
    b.raw.setdefault("growth", {})["reads"] = latency  # type: ignore[index]
    top = sizes[-1]
    for name, (what, documented, _) in endpoints.items():
        small, large = latency[name].get(SMALL), latency[name].get(top)
        label = f"{what}: GET {documented}, wrk -t1 -c{WRK_CONNECTIONS}"
        b.add(
            "P9",
            label,
            f"p95 ms, {SMALL} rows",
            None,
            small and small["p95_ms"],
            "-",
            seed_applies=False,
        )
        b.add(
            "P9",
            label,
            f"p95 ms, {top:,} rows",
            None,
            large and large["p95_ms"],
            "base<=1.2",
            base=small and small["p95_ms"],
            base_name=f"{SMALL} rows",
            seed_applies=False,
        )
    if any(f["failed"] for by_size in latency.values() for f in by_size.values()):
        b.notes.append("P9: some reads failed (non-2xx or socket errors): see the raw output.")
    if not paging:
        b.notes.append(
            "P9: this API ignores ?limit= on GET /api/v1/todos (every row comes back): the "
            "todo page was measured only up to 1,000 rows."
        )
    b.notes.append(
        f"P9: jobs and todos {SMALL} rows each (jobs real, submitted through the API), then "
        "topped up in SQL; the ids read are real ones. Ours alone."
    )
    drawn = plots.read_latency(
        latency, {n: e[0] for n, e in endpoints.items()}, b.args.plots / "bench-read-latency.png"
    )
    print(f"  drew {drawn}", flush=True)

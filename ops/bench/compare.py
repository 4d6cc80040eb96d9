"""TaskOverflow's benchmark, optionally side by side with the seed design (Flask + Celery).

Starts ours (API on port 6402, workers through ``python -m workers``, database
taskoverflow_bench, Redis db 2, worker metrics on 9192) and, when given a folder holding the
seed design's ``start-seed-anchor.sh`` (``--seed DIR`` or ``SEED_BENCH=DIR``; it serves on
port 6401), the seed design too. Runs the workloads P1-P7 against each with the same clients
(``jobs_client.py`` and ``api_rps.sh`` beside this file), then P8-P11 against ours alone
(at_size.py, and retention.py as a subprocess on its own database, port and Redis db), prints
one table with the figures, the ratio and the target, and stops everything it started.
Without the seed design, the table holds ours alone and only the other targets are judged.

- P8: one 1,000,000-todo calendar on a fresh worker pool: time, worker peak RSS, the API's
  RSS growth while it serves the result, download MB/s, sizes plain and gzipped.
- P9: read latency (p50/p95, wrk) on small tables, then 1k to 1M jobs and todos.
- P10: P2's workload on 1 worker process, then on 2: how far a second process scales.
- P11: 50 jobs/s with retention on (retention.py): the jobs table must level off.

P8 and P9 also draw docs/bench-calendar-growth.png and docs/bench-read-latency.png (--plots).

    make bench                                  # ours alone (~25 minutes, P11 is 10 of them)
    make bench BENCH_ARGS="--seed /path/to/seed" # beside the seed design (~30 minutes)
    python ops/bench/compare.py --only P1,P5    # some workloads
    python ops/bench/compare.py --only P8,P9 --p8-todos 100000 --p9-max 10000  # smaller
    python ops/bench/compare.py --record        # also rewrite the results in docs/BENCHMARKS.md

Only same-run ratios mean anything: these machines drift 20-30 % between runs. Our processes
run with production settings (LOG_LEVEL=INFO, JSON lines), logging to /dev/null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import at_size
import psycopg2
from retention import Sample, levelled
from system import (
    BIN,
    HERE,
    OURS,
    OURS_DB,
    OURS_DB_URL,
    ROOT,
    WORKERS,
    Ours,
    peak_rss_mib,
    pids_matching,
    psql,
    stop,
)
from table import Bench, table

SEED_DB = "seed_anchor"  # the database start-seed-anchor.sh creates
DOCS = ROOT / "docs" / "BENCHMARKS.md"
RESULTS_START, RESULTS_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def start_seed(folder: Path) -> list[int]:
    out = subprocess.run(
        [str(folder / "start-seed-anchor.sh")], check=True, capture_output=True, text=True
    ).stdout
    print("  " + out.strip().splitlines()[-1], flush=True)
    return [int(pid) for pid in re.findall(r"^(?:gunicorn|celery) (\d+)$", out, re.M)]


# --- data ----------------------------------------------------------------------------------


def reset(database: str, *, jobs: bool) -> None:
    tables = "todos, jobs, job_attempts" if jobs else "todos"
    psql(database, f"TRUNCATE {tables} RESTART IDENTITY")


_FILL = (
    "INSERT INTO todos (title, description, completed, deadline_at, created_at, updated_at) "
    "SELECT 'Todo ' || i, 'benchmark todo ' || i, false, "
    "make_timestamp(2027, 1 + i % 9, 10 + i % 10, 9, 30, 0), "
    "now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc' "
    "FROM generate_series(:first, :last) AS i"
)


def fill_todos(database: str, count: int) -> None:
    """Top the todos table up to ``count`` rows in SQL, shaped like jobs_e2e.py's own (which
    would take minutes through the seed's API for 100,000)."""
    have = int(psql(database, "SELECT count(*) FROM todos"))
    if have >= count:
        return
    psql(database, _FILL.replace(":first", str(int(have))).replace(":last", str(count - 1)))


# --- clients -------------------------------------------------------------------------------


def jobs_e2e(base: str | None, jobs: int, concurrency: int, todos: int) -> dict[str, Any] | None:
    """jobs_client.py against ``base`` (None: a system not in this run)."""
    if base is None:
        return None
    out = subprocess.run(
        [
            str(BIN / "python"),
            str(HERE / "jobs_client.py"),
            base,
            "--jobs",
            str(jobs),
            "--concurrency",
            str(concurrency),
            "--todos",
            str(todos),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if out.returncode != 0:
        print(f"  ! jobs_e2e failed against {base}: {out.stderr.strip()[-300:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def api_rps(base: str | None, seconds: int) -> dict[str, dict[str, Any]] | None:
    if base is None:
        return None
    out = subprocess.run(
        [str(HERE / "api_rps.sh"), base, str(seconds)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**os.environ, "PYTHON": str(BIN / "python")},
    ).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_kind = {}
    for line in lines:
        path = str(line["path"])
        kind = "health" if path.endswith("/health") else "list" if path.endswith("/todos") else "id"
        by_kind[kind] = line
    return by_kind


def get(result: dict[str, Any] | None, key: str) -> float | None:
    return None if result is None else float(result[key])


# --- workloads -----------------------------------------------------------------------------


def both(b: Bench, key: str, jobs: int, concurrency: int, todos: int) -> tuple[Any, Any]:
    """The same jobs_e2e workload against the seed, then ours; kept in the raw output."""
    seed = jobs_e2e(b.seed, jobs, concurrency, todos)
    ours = jobs_e2e(OURS, jobs, concurrency, todos)
    b.raw[key] = {"seed": seed, "ours": ours}
    return seed, ours


def p1(b: Bench) -> None:
    seed, ours = both(b, "P1", 300, 16, 20)
    label = "300 jobs, 20-todo calendars, 16 clients"
    b.add("P1", label, "jobs/s", get(seed, "jobs_per_s"), get(ours, "jobs_per_s"), "ratio>=3")
    b.add("P1", label, "p50 ms", get(seed, "p50_ms"), get(ours, "p50_ms"), "ratio<=0.4")


def p7(b: Bench) -> None:
    """Each sample after >= IDLE seconds with no work; seed and ours alternate, so each is
    idle while the other runs its sample."""
    samples: dict[str, list[float]] = {"seed": [], "ours": []}
    for base in (b.seed, OURS):
        jobs_e2e(base, 1, 1, 20)  # the todo count settles outside the timed samples
    for _ in range(b.args.idle_samples):
        time.sleep(b.args.idle_s)
        for name, base in (("seed", b.seed), ("ours", OURS)):
            result = jobs_e2e(base, 1, 1, 20)
            if result is not None:
                samples[name].append(result["p50_ms"])
    b.raw["P7"] = samples

    def p95(values: list[float]) -> float | None:
        if len(values) < 2:
            return None
        return statistics.quantiles(values, n=20, method="inclusive")[18]

    label = f"one job after {b.args.idle_s:g} s idle ({b.args.idle_samples} samples)"
    b.add("P7", label, "p95 ms", p95(samples["seed"]), p95(samples["ours"]), "abs<=150")

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    b.add("P7", label, "p50 ms", median(samples["seed"]), median(samples["ours"]), "-")


def p5_p6(b: Bench) -> None:
    seed, ours = api_rps(b.seed, b.args.wrk_s), api_rps(OURS, b.args.wrk_s)
    b.raw["P5/P6"] = {"seed": seed, "ours": ours}
    for key, kind, label in (
        ("P5", "id", "GET /api/v1/todos/{id}, wrk -t2 -c32"),
        ("P6", "list", "GET /api/v1/todos (100 rows), wrk -t2 -c32"),
        ("-", "health", "GET /api/v1/health, wrk -t2 -c32"),
    ):
        b.add(
            key,
            label,
            "req/s",
            None if seed is None else float(seed[kind]["rps"]),
            None if ours is None else float(ours[kind]["rps"]),
            "ratio>=2" if key != "-" else "-",
        )


def p2(b: Bench) -> None:
    seed, ours = both(b, "P2", 100, 8, 1000)
    label = "100 jobs, 1,000-todo calendars, 8 clients"
    b.add("P2", label, "jobs/s", get(seed, "jobs_per_s"), get(ours, "jobs_per_s"), "ratio>=10")


def one_big_calendar(b: Bench, key: str, todos: int, samples: int, target: str) -> None:
    """One client, ``samples`` jobs in a row on ``todos`` todos (inserted in SQL): the median
    POST -> SUCCESS time."""
    for database in (SEED_DB, OURS_DB) if b.seed else (OURS_DB,):
        fill_todos(database, todos)
    seed, ours = both(b, key, samples, 1, todos)
    label = f"one {todos:,}-todo calendar, POST -> SUCCESS (median of {samples})"
    b.add(key, label, "ms", get(seed, "p50_ms"), get(ours, "p50_ms"), target)


def p3(b: Bench) -> None:
    one_big_calendar(b, "P3", 10_000, 5, "ratio<=0.1")


def p4(b: Bench) -> None:
    one_big_calendar(b, "P4", 100_000, 3, "abs<=1000")
    # The worker processes ran every earlier (smaller) job too: their high-water mark is P4's.
    b.add(
        "P4",
        "worker peak RSS (VmHWM, largest worker process)",
        "MiB",
        peak_rss_mib(r"celery .*worker") if b.seed else None,
        peak_rss_mib(WORKERS),
        "abs<=200",
    )


_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pattern: str) -> float:
    """CPU time (user + system, ms) used so far by the live processes matching ``pattern``."""
    total = 0.0
    for pid in pids_matching(pattern):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) * _TICK_MS
    return total


def busy_ms() -> float:
    """CPU time the whole machine has spent busy (all cores), ms."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) * _TICK_MS


def drain(b: Bench, processes: int, jobs: int) -> dict[str, Any]:
    """The worker pool alone: ``jobs`` 1,000-todo calendar jobs queued while no worker runs,
    then a pool of ``processes`` started. Measured between the 10th and the 90th percent of
    the jobs finished (the pool's start and the last stragglers left out): jobs/s, and the
    CPU each job cost the worker processes, their Postgres backends and the whole machine."""
    reset(OURS_DB, jobs=True)
    at_size.fill(todos=1000)
    b.ours.stop_workers()
    for _ in range(jobs):
        at_size.call("POST", "/api/v1/todos/ical")
    # The watcher's own backend is one of these: idle but for one count every 0.1 s.
    groups = {"worker": WORKERS, "postgres": rf"^postgres: .* {OURS_DB} "}
    b.ours.start_workers(processes)
    marks: list[tuple[float, int, dict[str, float], float]] = []
    deadline = time.monotonic() + 600
    done = 0
    # One connection for the whole watch: a psql per look would cost the machine more CPU
    # than some of what it measures.
    watch = psycopg2.connect(OURS_DB_URL)
    watch.autocommit = True
    while done < jobs and time.monotonic() < deadline:
        time.sleep(0.1)
        with watch.cursor() as cur:
            cur.execute("SELECT count(*) FROM jobs WHERE status = 'SUCCESS'")
            done = int(cur.fetchone()[0])
        mark = 0.1 if not marks else 0.9
        if len(marks) < 2 and done >= mark * jobs:
            cpu = {name: cpu_ms(pattern) for name, pattern in groups.items()}
            marks.append((time.monotonic(), done, cpu, busy_ms()))
    watch.close()
    if len(marks) < 2 or marks[1][1] == marks[0][1]:
        return {"processes": processes, "jobs": jobs, "succeeded": done, "jobs_per_s": None}
    (t0, n0, cpu0, busy0), (t1, n1, cpu1, busy1) = marks
    per_job = {
        f"{name}_cpu_ms_per_job": round((cpu1[name] - cpu0[name]) / (n1 - n0), 2) for name in groups
    }
    return {
        "processes": processes,
        "jobs": jobs,
        "succeeded": done,
        "jobs_per_s": round((n1 - n0) / (t1 - t0), 1),
        **per_job,
        "machine_busy_cpu_ms_per_job": round((busy1 - busy0) / (n1 - n0), 2),
        "machine_busy_cores": round((busy1 - busy0) / 1000 / (t1 - t0), 2),
    }


def p10(b: Bench) -> None:
    """P2's workload on one worker process, then on two (the same threads each), each on a
    fresh pool and a clean table of 1,000 todos (P8 and P9 leave a million); then the pool
    alone, draining a queue of the same jobs (no API or client competing for the cores)."""
    results: dict[int, dict[str, Any] | None] = {}
    drained: dict[int, dict[str, Any]] = {}
    for processes in (1, 2):
        reset(OURS_DB, jobs=False)
        at_size.fill(todos=1000)
        b.ours.restart_workers(processes)
        results[processes] = jobs_e2e(OURS, 100, 8, 1000)
    for processes in (1, 2):
        drained[processes] = drain(b, processes, b.args.p10_drain_jobs)
    b.ours.restart_workers()
    b.raw["P10"] = {"e2e": results, "drain": drained}
    label = f"P2's workload (100 jobs, 1,000 todos, 8 clients), {b.args.threads} threads/process"
    one_and_two(b, label, get(results[1], "jobs_per_s"), get(results[2], "jobs_per_s"))
    label = f"the pool alone: {b.args.p10_drain_jobs:,} queued 1,000-todo jobs drained"
    for processes in (1, 2):
        figures = drained[processes]
        b.notes.append(
            f"P10, pool alone, {processes} process(es): CPU per job: worker "
            f"{figures.get('worker_cpu_ms_per_job')} ms, its Postgres backends "
            f"{figures.get('postgres_cpu_ms_per_job')} ms, the whole machine "
            f"{figures.get('machine_busy_cpu_ms_per_job')} ms; "
            f"{figures.get('machine_busy_cores')} of {os.cpu_count()} cores busy."
        )
    one_and_two(b, label, drained[1]["jobs_per_s"], drained[2]["jobs_per_s"])


def one_and_two(b: Bench, label: str, one: float | None, two: float | None) -> None:
    """P10's two rows: jobs/s on one worker process, and on two judged against it."""
    b.add("P10", label, "jobs/s, 1 worker process", None, one, "-", seed_applies=False)
    b.add(
        "P10",
        label,
        "jobs/s, 2 worker processes",
        None,
        two,
        "base>=1.6",
        base=one,
        base_name="1 process",
        seed_applies=False,
    )


#: A retention.py sample line: t (s), sent, rows, results, open, KiB.
_SAMPLE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def p11(b: Bench) -> None:
    """retention.py as it is (its own system: database taskoverflow_retention, port 6403,
    Redis db 3, worker metrics on 9193); ours idles meanwhile."""
    seconds = b.args.p11_s
    # About 20 samples whatever the length (retention.py judges thirds of them).
    every = min(30.0, max(1.0, seconds / 20))
    cmd = [str(BIN / "python"), str(HERE / "retention.py"), "--seconds", str(seconds)]
    cmd += ["--sample-every", f"{every:g}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600, check=False)
    samples = [
        Sample(*map(int, m.groups())) for m in map(_SAMPLE.match, out.stdout.splitlines()) if m
    ]
    verdict = next(
        (line for line in out.stdout.splitlines() if line.startswith(("levelled", "STILL"))),
        out.stderr.strip()[-300:],
    )
    rate = re.search(r"^submitted \d+ jobs in \d+ s \(([\d.]+)/s\)", out.stdout, re.M)
    b.raw["P11"] = {
        "exit": out.returncode,
        "verdict": verdict,
        "samples": [vars(s) for s in samples],
    }
    third = len(samples) // 3
    middle, last = samples[third : 2 * third], samples[2 * third :]
    label = f"50 jobs/s for {seconds} s, retention on (retention.py)"
    sent = float(rate.group(1)) if rate else None
    b.add("P11", label, "jobs submitted/s", None, sent, "-", seed_applies=False)
    for name, metric in (("rows", "jobs rows"), ("size_kib", "jobs table KiB")):
        # As retention.py judges: the last third's peak against the middle third's.
        before = max((getattr(s, name) for s in middle), default=None)
        after = max((getattr(s, name) for s in last), default=None)
        b.add(
            "P11",
            label,
            f"{metric}, peak of the last third",
            None,
            after,
            "base<=1.15",
            base=before,
            base_name="middle third",
            seed_applies=False,
        )
    ok, _ = levelled(samples, 0.15, ["rows", "size_kib"])
    b.notes.append(f"P11: retention.py says (exit {out.returncode}): {verdict}")
    if ok != (out.returncode == 0):
        b.notes.append("P11: its verdict and this table's disagree: see the raw output.")


#: In the order they run: P10 before P8 and P9 fill the tables; P6 is measured with P5.
WORKLOADS: dict[str, Callable[[Bench], None]] = {
    "P1": p1,
    "P7": p7,
    "P5": p5_p6,
    "P2": p2,
    "P3": p3,
    "P4": p4,
    "P10": p10,
    "P8": at_size.p8,
    "P9": at_size.p9,
    # Last: its own system on its own database, judged on table size (CPU noise moves it
    # least), and the longest.
    "P11": p11,
}


# --- report --------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    pg = psql("postgres", "SHOW server_version")
    redis = subprocess.run(
        ["redis-server", "--version"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()[2:3]
    return (
        f"{platform.platform()}; {os.cpu_count()} x {cpu}{mem}; Python "
        f"{platform.python_version()}; PostgreSQL {pg}; Redis {''.join(redis)[2:]}"
    )


def report(b: Bench, started: str, took: float, host: str) -> str:
    a = b.args
    return "\n".join(
        [
            f"Run {started} UTC, {took / 60:.1f} min, `python ops/bench/compare.py"
            f"{' --only ' + a.only if a.only else ''}`.",
            "",
            f"- machine: {host}",
            f"- ours: uvicorn x{a.api_workers}; `python -m workers` with WORKER_PROCESSES="
            f"{a.processes}, DRAMATIQ_THREADS={a.threads}; LOG_LEVEL={a.log_level} (JSON)",
            "- seed: gunicorn -w 3 (sync), celery --concurrency 2 (prefork), Redis broker and "
            "result backend"
            if b.seed
            else "- seed: not in this run (ours alone; ratio targets not judged)",
            "",
            table(b),
            "",
            *(f"- {note}" for note in b.notes),
            *([""] if b.notes else []),
            "<details><summary>raw client output</summary>",
            "",
            "```json",
            json.dumps(b.raw, indent=1, default=str),
            "```",
            "</details>",
        ]
    )


def record(text: str) -> None:
    doc = DOCS.read_text()
    start, end = doc.index(RESULTS_START) + len(RESULTS_START), doc.index(RESULTS_END)
    DOCS.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
    print(f"recorded in {DOCS.relative_to(ROOT)}")


@contextlib.contextmanager
def systems(args: argparse.Namespace) -> Iterator[Ours]:
    seed_pids: list[int] = []
    ours = Ours(args)
    try:
        if args.seed:
            seed_pids = start_seed(args.seed)
        ours.start()
        yield ours
    finally:
        stop(ours.procs(), seed_pids)


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated: {','.join(WORKLOADS)} (P5 also measures P6); default: all",
    )
    parser.add_argument("--quick", action="store_true", help="same as --only P1")
    parser.add_argument(
        "--record", action="store_true", help=f"write the results into {DOCS.relative_to(ROOT)}"
    )
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--idle-samples", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--wrk-s", type=int, default=8)
    parser.add_argument(
        "--p8-todos", type=positive, default=1_000_000, help="P8's calendar size (todos)"
    )
    parser.add_argument(
        "--p9-max",
        type=positive,
        default=1_000_000,
        help="P9's largest table (rows in jobs and in todos; steps 1k, 10k, 100k, 1M)",
    )
    parser.add_argument(
        "--p10-drain-jobs", type=positive, default=1000, help="P10's queued jobs per pool size"
    )
    parser.add_argument(
        "--p9-wrk-s", type=positive, default=6, help="P9's seconds of wrk per read and size"
    )
    parser.add_argument("--p11-s", type=positive, default=600, help="P11's length in seconds")
    parser.add_argument(
        "--plots",
        type=Path,
        default=ROOT / "docs",
        help="folder the growth plots (PNG) are written to (default: docs/)",
    )
    parser.add_argument(
        "--seed",
        type=Path,
        default=os.environ.get("SEED_BENCH") or None,
        help="folder holding the seed design's start-seed-anchor.sh (default: $SEED_BENCH); "
        "without it, ours alone",
    )
    args = parser.parse_args()
    if args.seed is not None:
        args.seed = Path(args.seed)
        if not (args.seed / "start-seed-anchor.sh").is_file():
            parser.error(f"--seed {args.seed}: no start-seed-anchor.sh there")
    if args.quick:
        args.only = "P1"
    chosen = [k.strip().upper() for k in args.only.split(",") if k.strip()] or list(WORKLOADS)
    unknown = set(chosen) - set(WORKLOADS) - {"P6"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if "P6" in chosen and "P5" not in chosen:
        chosen.append("P5")
    if {"P5", "P9"} & set(chosen) and shutil.which("wrk") is None:
        raise SystemExit(
            "bench: P5/P6 and P9 need wrk (Debian: apt-get install wrk; `make bench` installs it)"
        )
    args.plots.mkdir(parents=True, exist_ok=True)

    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    t0 = time.monotonic()
    host = machine()
    print(f"machine: {host}", flush=True)
    with systems(args) as ours:
        bench = Bench(args, ours)
        for database, jobs in ((SEED_DB, False), (OURS_DB, True)):
            if database == OURS_DB or args.seed:
                reset(database, jobs=jobs)
        for key in [k for k in WORKLOADS if k in chosen]:
            print(f"{key}…", flush=True)
            WORKLOADS[key](bench)
    text = report(bench, started, time.monotonic() - t0, host)
    print("\n" + text)
    if args.record:
        record(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TaskOverflow's benchmark, optionally side by side with the seed design (Flask + Celery).

Starts ours (API on port 6402, workers through ``python -m workers``, database
taskoverflow_bench, Redis db 2) and, when given a folder holding the seed design's
``start-seed-anchor.sh`` (``--seed DIR`` or ``SEED_BENCH=DIR``; it serves on port 6401), the
seed design too. Runs the workloads P1-P7 against each with the same clients
(``jobs_client.py`` and ``api_rps.sh`` beside this file), prints one table with the figures,
the ratio and the target, and stops everything it started. Without the seed design, the
table holds ours alone and only the absolute targets are judged.

    make bench                                  # ours alone (~3 minutes)
    make bench BENCH_ARGS="--seed /path/to/seed" # beside the seed design (~6 minutes)
    python ops/bench/compare.py --only P1,P5    # some workloads
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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
OURS = "http://127.0.0.1:6402"
SEED = "http://127.0.0.1:6401"
OURS_DB = "taskoverflow_bench"
SEED_DB = "seed_anchor"  # the database start-seed-anchor.sh creates
DOCS = ROOT / "docs" / "BENCHMARKS.md"
#: Limits far above any workload's needs (see ours_env).
BENCH_LIMITS = {
    "RATE_LIMIT_READS_PER_MINUTE": "100000000",
    "RATE_LIMIT_WRITES_PER_MINUTE": "100000000",
    "JOBS_MAX_UNFINISHED": "10000000",
    "JOBS_MAX_UNFINISHED_PER_CLIENT": "10000000",
    "TODOS_MAX": "100000000",
    "CALENDAR_MAX_EVENTS": "100000000",
}
RESULTS_START, RESULTS_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


@dataclass
class Row:
    """One line of the table: a workload, a metric, both figures, the target."""

    key: str
    workload: str
    metric: str
    seed: float | None
    ours: float | None
    #: "ratio>=3", "ratio<=0.4" (ours / seed), or "abs<=1000" (ours alone)
    target: str

    @property
    def ratio(self) -> float | None:
        if self.seed is None or self.ours is None or self.seed == 0:
            return None
        return self.ours / self.seed

    @property
    def met(self) -> bool | None:
        match = re.fullmatch(r"(ratio|abs)(<=|>=)([\d.]+)", self.target)
        if not match:
            return None
        kind, op, bound_s = match.groups()
        if kind == "ratio" and self.seed is None:
            return None  # no seed design in this run: nothing to compare with
        value = self.ratio if kind == "ratio" else self.ours
        if value is None:
            return False
        bound = float(bound_s)
        return value >= bound if op == ">=" else value <= bound


@dataclass
class Bench:
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, object] = field(default_factory=dict)

    @property
    def seed(self) -> str | None:
        """The seed design's URL, when it runs beside ours."""
        return SEED if self.args.seed else None

    def add(self, *row_args: object) -> None:
        row = Row(*row_args)  # type: ignore[arg-type]
        self.rows.append(row)
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        print(
            f"  {row.key} {row.metric}: seed {fmt(row.seed)}, ours {fmt(row.ours)} ({ratio})",
            flush=True,
        )


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


# --- processes -----------------------------------------------------------------------------


def psql(database: str, sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qAtc", sql],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"bench: nothing answering at {url}")


def start_seed(folder: Path) -> list[int]:
    out = subprocess.run(
        [str(folder / "start-seed-anchor.sh")], check=True, capture_output=True, text=True
    ).stdout
    print("  " + out.strip().splitlines()[-1], flush=True)
    return [int(pid) for pid in re.findall(r"^(?:gunicorn|celery) (\d+)$", out, re.M)]


def ours_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{OURS_DB}",
        "BROKER_URL": "redis://127.0.0.1:6379/2",
        "BROKER_NAMESPACE": "taskoverflow-bench",
        "LOG_LEVEL": args.log_level,
        "LOG_FORMAT": "json",
        "WORKER_PROCESSES": str(args.processes),
        "DRAMATIQ_THREADS": str(args.threads),
        # One load generator is every client here: the limits stay on (each request pays
        # for its rate-limit check and each job for its admission) but never refuse.
        **BENCH_LIMITS,
    }


def start_ours(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    env = ours_env(args)
    subprocess.run(
        [str(BIN / "python"), "ops/dev/create_database.py"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [str(BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    # The API's log is dropped; the workers' is kept to see them ready (a line per job).
    api_log = open(os.devnull, "wb")  # noqa: SIM115 (lives as long as the processes)
    worker_log = tempfile.NamedTemporaryFile(prefix="bench-workers-", suffix=".log")  # noqa: SIM115
    api = [
        str(BIN / "uvicorn"),
        "--factory",
        "api.app:create_app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        "6402",
        "--workers",
        str(args.api_workers),
        "--no-access-log",
        "--no-proxy-headers",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        for cmd, log in ((api, api_log), ([str(BIN / "python"), "-m", "workers"], worker_log))
    ]
    wait_http(f"{OURS}/api/v1/health")
    wait_log(Path(worker_log.name), "Worker process is ready for action", args.processes)
    return procs


def wait_log(path: Path, line: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while path.read_text(errors="replace").count(line) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no {line!r} in {path} after {timeout:g} s")
        time.sleep(0.1)


def stop(ours: list[subprocess.Popen[bytes]], seed_pids: list[int]) -> None:
    # SIGTERM to each main process only (dramatiq forwards it to its workers; a worker that
    # also got one from us would take the second as "kill now"), then the group if needed.
    for proc in ours:
        proc.terminate()
    for proc in ours:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for pid in seed_pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)


def peak_rss_mib(pattern: str) -> float | None:
    """The largest peak RSS (VmHWM) among live processes whose command line matches."""
    peaks = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if re.search(pattern, cmdline):
            match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
            if match:
                peaks.append(int(match.group(1)) / 1024)
    return max(peaks) if peaks else None


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
        peak_rss_mib(r"dramatiq workers\.main"),
        "abs<=200",
    )


WORKLOADS: dict[str, Callable[[Bench], None]] = {
    "P1": p1,
    "P7": p7,
    "P5": p5_p6,
    "P2": p2,
    "P3": p3,
    "P4": p4,
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


def table(b: Bench) -> str:
    lines = [
        "| # | workload | metric | seed | ours | ours/seed | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in b.rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        target = r.target.replace("ratio", "ours/seed ").replace("abs", "ours ")
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        lines.append(
            f"| {r.key} | {r.workload} | {r.metric} | {fmt(r.seed)} | {fmt(r.ours)} "
            f"| {ratio} | {target} | {met} |"
        )
    return "\n".join(lines)


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
def systems(args: argparse.Namespace) -> Iterator[None]:
    seed_pids: list[int] = []
    ours: list[subprocess.Popen[bytes]] = []
    try:
        if args.seed:
            seed_pids = start_seed(args.seed)
        ours = start_ours(args)
        yield
    finally:
        stop(ours, seed_pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated: P1,P2,P3,P4,P5,P7 (P5 also measures P6)"
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
    if ("P5" in chosen) and shutil.which("wrk") is None:
        raise SystemExit(
            "bench: P5/P6 need wrk (Debian: apt-get install wrk; `make bench` installs it)"
        )

    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    t0 = time.monotonic()
    bench = Bench(args)
    host = machine()
    print(f"machine: {host}", flush=True)
    with systems(args):
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

"""Side-by-side benchmark: TaskOverflow and the seed design (Flask + Celery), same run.

Starts the seed design with ../shared/bench/start-seed-anchor.sh (port 6401) and our API and
workers (port 6402, database taskoverflow_bench), runs ../shared/bench/jobs_e2e.py against
each with the same workloads, prints one table, and stops everything it started.

    make bench                     # all workloads
    python ops/bench/compare.py --quick

Only same-run ratios mean anything: these machines drift 20-30 % between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", ROOT.parent / "shared" / "bench"))
BIN = Path(sys.executable).parent
OURS_PORT = 6402
SEED_URL = "http://127.0.0.1:6401"
BENCH_DB = "postgresql://postgres@127.0.0.1:5432/taskoverflow_bench"

#: (label, jobs, concurrency, todos): the workloads of ../shared/bench/README.md
WORKLOADS = [
    ("300 jobs x 20 todos, 16 clients", 300, 16, 20),
    ("100 jobs x 1,000 todos, 8 clients", 100, 8, 1000),
    ("5 jobs x 10,000 todos, 1 client", 5, 1, 10_000),
]


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


def start_seed() -> list[int]:
    out = subprocess.run(
        [str(SHARED_BENCH / "start-seed-anchor.sh")], check=True, capture_output=True, text=True
    ).stdout
    print(out.strip().splitlines()[-1], flush=True)
    return [int(pid) for pid in re.findall(r"^(?:gunicorn|celery) (\d+)$", out, re.M)]


def start_ours(api_workers: int, processes: int, threads: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": BENCH_DB,
        "BROKER_URL": "redis://127.0.0.1:6379/2",
        "BROKER_NAMESPACE": "taskoverflow-bench",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "DRAMATIQ_THREADS": str(threads),
        "dramatiq_worker_timeout": "100",
    }
    subprocess.run(
        [str(BIN / "python"), "ops/dev/create_database.py"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [str(BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    logs = open(os.devnull, "wb")  # noqa: SIM115 (lives as long as the processes)
    procs = [
        subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "--factory",
                "api.app:create_app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(OURS_PORT),
                "--workers",
                str(api_workers),
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=logs,
            stderr=logs,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                str(BIN / "dramatiq"),
                "workers.main",
                "-p",
                str(processes),
                "-t",
                str(threads),
                "--skip-logging",
            ],
            cwd=ROOT,
            env=env,
            stdout=logs,
            stderr=logs,
            start_new_session=True,
        ),
    ]
    wait_http(f"http://127.0.0.1:{OURS_PORT}/api/v1/health")
    return procs


def run_workload(base: str, jobs: int, concurrency: int, todos: int) -> dict[str, float]:
    out = subprocess.run(
        [
            str(BIN / "python"),
            str(SHARED_BENCH / "jobs_e2e.py"),
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
    )
    if out.returncode != 0:
        return {"error": 1.0, "jobs_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first workload")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    print(
        f"ours: uvicorn x{args.api_workers}, dramatiq -p {args.processes} -t {args.threads}; "
        "seed: gunicorn -w 3, celery --concurrency 2",
        flush=True,
    )
    seed_pids = start_seed()
    ours = start_ours(args.api_workers, args.processes, args.threads)
    rows = []
    try:
        for label, jobs, concurrency, todos in WORKLOADS[:1] if args.quick else WORKLOADS:
            seed = run_workload(SEED_URL, jobs, concurrency, todos)
            mine = run_workload(f"http://127.0.0.1:{OURS_PORT}", jobs, concurrency, todos)
            rows.append((label, seed, mine))
            print(f"  done: {label}", flush=True)
    finally:
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

    header = (
        "| workload | seed jobs/s | ours jobs/s | ratio | seed p50 ms | ours p50 ms | p50 ratio |"
    )
    print("\n" + header + "\n|---|---|---|---|---|---|---|")
    for label, seed, mine in rows:
        ratio = mine["jobs_per_s"] / seed["jobs_per_s"] if seed["jobs_per_s"] else float("nan")
        p50 = mine["p50_ms"] / seed["p50_ms"] if seed["p50_ms"] else float("nan")
        print(
            f"| {label} | {seed['jobs_per_s']} | {mine['jobs_per_s']} | {ratio:.2f}x | "
            f"{seed['p50_ms']} | {mine['p50_ms']} | {p50:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

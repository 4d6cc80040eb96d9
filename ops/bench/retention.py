"""Retention under a steady stream of jobs: does the ``jobs`` table stop growing?

Starts the API and a worker pool (database taskoverflow_retention, Redis db 3) with short
result and record lifetimes, submits calendar jobs at a fixed rate, and samples the table
every few seconds: rows, rows still holding a result, and its size on disk (table, TOAST and
indexes). At the end it compares the last third of the run with the middle third; the run
passes (exit 0) if rows and size have levelled off, i.e. grew by at most --tolerance.

    make retention                                   # 50 jobs/s for 10 minutes (~11 min)
    python ops/bench/retention.py --seconds 60       # a short look

Steady state is reached once the oldest job's record has expired (--record-ttl plus a
reconciler interval); the run must be several times longer than that. Each job renders a
calendar of --todos todos, so every result is a few kB (stored out of line, in TOAST).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# The benchmark beside this file starts and stops the same processes (run as a script, this
# folder is on the path).
from system import BIN, ROOT, wait_http, wait_log
from system import stop as stop_processes

DATABASE = "taskoverflow_retention"


@dataclass
class Sample:
    at_s: float
    submitted: int
    rows: int
    with_result: int
    unfinished: int
    size_kib: int


DATABASE_URL = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"


def psql(url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", url, "-qAtc", sql],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def environment(args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "BROKER_URL": args.redis_url,
        "BROKER_NAMESPACE": "taskoverflow-retention",
        "LOG_FORMAT": "json",
        "JOB_RESULT_TTL_S": str(args.result_ttl),
        "JOB_RECORD_TTL_S": str(args.record_ttl),
        "RECONCILE_INTERVAL_S": str(args.purge_interval),
        "WORKER_PROCESSES": "2",
        "DRAMATIQ_THREADS": "4",
        # Not compare.py's pool's port (9192), which runs beside this one in `make bench` (P11).
        "WORKER_METRICS_PORT": "9193",
        # 50 jobs/s from one client: far over its default limits, which this run is not about.
        "RATE_LIMIT_WRITES_PER_MINUTE": "0",
        "JOBS_MAX_UNFINISHED_PER_CLIENT": "100000",
        "JOBS_MAX_UNFINISHED": "100000",
    }


_TODOS = (
    "INSERT INTO todos (title, description, completed, deadline_at, created_at, updated_at) "
    "SELECT 'Todo ' || i, 'retention run ' || i, false, "
    "timestamp '2030-01-01' + i * interval '1 hour', now(), now() "
    "FROM generate_series(1, :count) AS i"
)


def start(env: dict[str, str], todos: int, port: int) -> tuple[list[subprocess.Popen[bytes]], Path]:
    url = env["DATABASE_URL"]
    for step in (["ops/dev/create_database.py"], ["-m", "alembic", "upgrade", "head"]):
        subprocess.run([str(BIN / "python"), *step], cwd=ROOT, env=env, check=True)
    psql(url, "TRUNCATE todos, jobs, job_attempts, idempotency_keys RESTART IDENTITY")
    psql(url, _TODOS.replace(":count", str(int(todos))))
    psql(url, "VACUUM ANALYZE jobs")
    log = Path(tempfile.mkstemp(prefix="retention-", suffix=".log")[1])
    out = log.open("wb")
    api = [str(BIN / "uvicorn"), "--factory", "api.app:create_app_from_env", "--no-proxy-headers"]
    api += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True)
        for cmd in (api, [str(BIN / "python"), "-m", "workers"])
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health")
        wait_log(log, "Worker process is ready", 2)  # WORKER_PROCESSES above
    except SystemExit:
        stop(procs)
        raise
    return procs, log


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    stop_processes(procs, seed_pids=[])


def sample(url: str, started: float, submitted: int) -> Sample:
    rows, with_result, unfinished, size = psql(
        url,
        "SELECT count(*), count(result), count(*) FILTER (WHERE finished_at IS NULL), "
        "pg_total_relation_size('jobs') / 1024 FROM jobs",
    ).split("|")
    return Sample(
        round(time.monotonic() - started),
        submitted,
        int(rows),
        int(with_result),
        int(unfinished),
        int(size),
    )


def show(s: Sample) -> Sample:
    print(
        f"{s.at_s:>6} {s.submitted:>7} {s.rows:>6} {s.with_result:>8} "
        f"{s.unfinished:>5} {s.size_kib:>7}",
        flush=True,
    )
    return s


def run(args: argparse.Namespace) -> list[Sample]:
    procs, log = start(environment(args), args.todos, args.port)
    port = args.port
    samples: list[Sample] = []
    submitted = refused = 0
    # Postgres reuses a deleted row's space only once the table is vacuumed. Production
    # servers (RDS) run autovacuum; a server without it (some test machines turn it off)
    # gets the same from this run: a plain VACUUM of jobs at autovacuum's default pace.
    vacuum_every = None if psql(args.database_url, "SHOW autovacuum") == "on" else 60.0
    if vacuum_every:
        print(
            f"this server runs without autovacuum: VACUUM jobs every {vacuum_every:g} s "
            "(autovacuum's default naptime) stands in for it"
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            started = time.monotonic()
            next_sample = started
            next_vacuum = started + (vacuum_every or args.seconds + 1)
            print(f"{'t (s)':>6} {'sent':>7} {'rows':>6} {'results':>8} {'open':>5} {'KiB':>7}")
            while (now := time.monotonic()) < started + args.seconds:
                if vacuum_every and now >= next_vacuum:
                    psql(args.database_url, "VACUUM jobs")
                    next_vacuum += vacuum_every
                if now >= next_sample:
                    samples.append(show(sample(args.database_url, started, submitted)))
                    next_sample += args.sample_every
                due = started + submitted / args.rate
                if now < due:
                    time.sleep(min(due - now, 0.05))
                    continue
                if client.post("/api/v1/todos/ical").status_code == 202:
                    submitted += 1
                else:
                    refused += 1
            # The last one too: it is judged (compare.py reads these lines, P11).
            samples.append(show(sample(args.database_url, started, submitted)))
    finally:
        stop(procs)
    if refused:
        print(f"retention: {refused} submissions refused (log: {log})")
    return samples


def levelled(samples: list[Sample], tolerance: float, judged: list[str]) -> tuple[bool, str]:
    """Each of ``judged`` (rows, size_kib) in the last third at most ``tolerance`` above the
    middle third's peak."""
    third = len(samples) // 3
    middle, last = samples[third : 2 * third], samples[2 * third :]
    if not middle or not last:
        return False, "too few samples to judge (run longer or sample more often)"
    verdicts = []
    ok = True
    for name in judged:
        before = max(getattr(s, name) for s in middle)
        after = max(getattr(s, name) for s in last)
        growth = (after - before) / before if before else float("inf")
        ok &= growth <= tolerance
        verdicts.append(f"{name}: peak {before} -> {after} ({growth:+.0%})")
    return ok, "; ".join(verdicts)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # As Ctrl-C does: unwind, so the processes this run started are stopped too.
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="jobs submitted per second")
    parser.add_argument("--seconds", type=int, default=600, help="how long to submit")
    parser.add_argument("--result-ttl", type=int, default=30, help="JOB_RESULT_TTL_S")
    parser.add_argument("--record-ttl", type=int, default=60, help="JOB_RECORD_TTL_S")
    parser.add_argument("--purge-interval", type=int, default=5, help="RECONCILE_INTERVAL_S")
    parser.add_argument("--todos", type=int, default=20, help="todos in every calendar")
    parser.add_argument("--sample-every", type=float, default=30, help="seconds between samples")
    parser.add_argument(
        "--tolerance", type=float, default=0.15, help="growth allowed between the last thirds"
    )
    parser.add_argument(
        "--judge",
        default="rows,size_kib",
        help="what must level off: rows, size_kib (size needs autovacuum: minutes)",
    )
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--port", type=int, default=6403, help="the API's port (127.0.0.1)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    args = parser.parse_args()
    samples = run(args)
    sent = samples[-1].submitted
    print(f"submitted {sent} jobs in {args.seconds} s ({sent / args.seconds:.1f}/s)")
    ok, verdict = levelled(samples, args.tolerance, args.judge.split(","))
    print(("levelled off: " if ok else "STILL GROWING: ") + verdict)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The processes a benchmark run starts, and what it reads of them in /proc.

``Ours`` is TaskOverflow as compare.py runs it: the API (uvicorn) and the worker pool
(``python -m workers``), with the pool restartable on its own, so a workload can have fresh
worker processes (their peak memory its own) or another number of them. retention.py starts
its own system with the same helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
OURS = "http://127.0.0.1:6402"
SEED = "http://127.0.0.1:6401"
OURS_DB = "taskoverflow_bench"
OURS_DB_URL = f"postgresql://postgres@127.0.0.1:5432/{OURS_DB}"
#: Each system its own port for the worker pool's /metrics (the default, 9191, is left to
#: development runs): retention.py's pool runs while ours idles.
OURS_METRICS_PORT = "9192"
#: Our worker pool's processes: the dramatiq CLI, its workers and its metrics server are one
#: command line (the workers are forks).
WORKERS = r"dramatiq workers\.main"
#: Our API's main process (uvicorn); its workers are children with another command line.
API = r"uvicorn .*api\.app"
#: Limits far above any workload's needs (see ours_env).
BENCH_LIMITS = {
    "RATE_LIMIT_READS_PER_MINUTE": "100000000",
    "RATE_LIMIT_WRITES_PER_MINUTE": "100000000",
    "JOBS_MAX_UNFINISHED": "10000000",
    "JOBS_MAX_UNFINISHED_PER_CLIENT": "10000000",
    "TODOS_MAX": "100000000",
    "CALENDAR_MAX_EVENTS": "100000000",
}
READY = "Worker process is ready for action"


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


def ours_env(args: argparse.Namespace, processes: int | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": OURS_DB_URL,
        "BROKER_URL": "redis://127.0.0.1:6379/2",
        "BROKER_NAMESPACE": "taskoverflow-bench",
        "LOG_LEVEL": args.log_level,
        "LOG_FORMAT": "json",
        "WORKER_PROCESSES": str(args.processes if processes is None else processes),
        "DRAMATIQ_THREADS": str(args.threads),
        "WORKER_METRICS_PORT": OURS_METRICS_PORT,
        # One load generator is every client here: the limits stay on (each request pays
        # for its rate-limit check and each job for its admission) but never refuse.
        **BENCH_LIMITS,
    }


class Ours:
    """Our API and worker pool, started for one run; ``restart_workers`` swaps the pool."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: subprocess.Popen[bytes] | None = None
        self.processes = args.processes
        # Kept open as long as the pool runs (a NamedTemporaryFile is deleted on close).
        self._worker_log: IO[bytes] | None = None

    def start(self) -> None:
        env = ours_env(self.args)
        for step in (["ops/dev/create_database.py"], ["-m", "alembic", "upgrade", "head"]):
            subprocess.run(
                [str(BIN / "python"), *step], cwd=ROOT, env=env, check=True, capture_output=True
            )
        api = [str(BIN / "uvicorn"), "--factory", "api.app:create_app_from_env"]
        api += ["--host", "127.0.0.1", "--port", "6402", "--workers", str(self.args.api_workers)]
        api += ["--no-access-log", "--no-proxy-headers"]
        # The API's log is dropped; the workers' is kept to see them ready (a line per job).
        self.api = subprocess.Popen(
            api,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.start_workers(self.args.processes)
        wait_http(f"{OURS}/api/v1/health")

    def start_workers(self, processes: int) -> None:
        log = tempfile.NamedTemporaryFile(prefix="bench-workers-", suffix=".log")  # noqa: SIM115
        self.workers = subprocess.Popen(
            [str(BIN / "python"), "-m", "workers"],
            cwd=ROOT,
            env=ours_env(self.args, processes),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self._worker_log, self.processes = log, processes
        wait_log(Path(log.name), READY, processes)

    def stop_workers(self) -> None:
        if self.workers is not None:
            stop([self.workers], [])
            self.workers = None

    def restart_workers(self, processes: int | None = None) -> None:
        """A fresh pool (same threads per process): its peak memory starts from nothing."""
        if self.workers is not None:
            stop([self.workers], [])
        self.start_workers(self.args.processes if processes is None else processes)

    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [proc for proc in (self.api, self.workers) if proc is not None]


# --- memory ---------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _all_pids() -> list[int]:
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit()]


def pids_matching(pattern: str) -> list[int]:
    pids = []
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            if re.search(pattern, _cmdline(pid)):
                pids.append(pid)
    return pids


def with_children(pids: list[int]) -> list[int]:
    """``pids`` and every process below them (uvicorn's workers are spawned: another
    command line, so only their parent tells them apart)."""
    parents: dict[int, int] = {}
    for pid in _all_pids():
        with contextlib.suppress(OSError, ValueError):
            # The command name (2nd field) is in parentheses and may hold spaces.
            stat = Path(f"/proc/{pid}/stat").read_text()
            parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    found = set(pids)
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return sorted(found)


def status_mib(pid: int, name: str) -> float | None:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in MiB; None once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{name}:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else None


def peak_rss_mib(pattern: str) -> float | None:
    """The largest peak RSS (VmHWM) among live processes whose command line matches."""
    peaks = [p for pid in pids_matching(pattern) if (p := status_mib(pid, "VmHWM")) is not None]
    return max(peaks) if peaks else None


@dataclass
class RssTrace:
    """VmRSS of some processes, sampled: each one's value before and its largest since."""

    before: dict[int, float] = field(default_factory=dict)
    peak: dict[int, float] = field(default_factory=dict)
    samples: int = 0

    def add(self, pid: int, mib: float) -> None:
        self.peak[pid] = max(self.peak.get(pid, mib), mib)

    @property
    def peak_mib(self) -> float | None:
        return max(self.peak.values(), default=None)

    @property
    def growth_mib(self) -> float | None:
        """The largest growth of one process over its value before."""
        grown = [self.peak[pid] - before for pid, before in self.before.items()]
        return max(grown, default=None)


@contextlib.contextmanager
def sampling_rss(pids: list[int], every_s: float = 0.01) -> Iterator[RssTrace]:
    """Samples the VmRSS of ``pids`` every ``every_s`` in a thread while the block runs.

    VmHWM would not do: it is the peak over the process's whole life, not this block's."""
    trace = RssTrace()
    for pid in pids:
        if (mib := status_mib(pid, "VmRSS")) is not None:
            trace.before[pid] = mib
            trace.add(pid, mib)
    done = threading.Event()

    def sample() -> None:
        while True:
            for pid in pids:
                if (mib := status_mib(pid, "VmRSS")) is not None:
                    trace.add(pid, mib)
            trace.samples += 1
            if done.wait(every_s):
                return

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield trace
    finally:
        done.set()
        thread.join()

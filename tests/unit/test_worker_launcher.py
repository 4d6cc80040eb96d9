"""``python -m workers`` builds the dramatiq command line from the worker settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from models.settings import WorkerSettings
from tests.processes import BIN, run
from workers.__main__ import (
    METRICS_DIR_PREFIX,
    dramatiq_argv,
    dramatiq_environ,
    fresh_metrics_dir,
)


def test_counts_and_shutdown_timeout_come_from_the_environment():
    """WORKER_PROCESSES, DRAMATIQ_THREADS and WORKER_SHUTDOWN_TIMEOUT_MS size the pool."""
    worker = WorkerSettings.from_env(
        {"WORKER_PROCESSES": "3", "DRAMATIQ_THREADS": "6", "WORKER_SHUTDOWN_TIMEOUT_MS": "9000"}
    )
    assert dramatiq_argv(worker) == [
        "dramatiq",
        "workers.main",
        "--processes",
        "3",
        "--threads",
        "6",
        "--skip-logging",
        "--worker-shutdown-timeout",
        "9000",
    ]


def test_defaults_are_explicit():
    """Never Dramatiq's one-process-per-CPU default: 1 process, 8 threads, 25 s to stop."""
    argv = dramatiq_argv(WorkerSettings.from_env({}))
    assert argv[argv.index("--processes") + 1] == "1"
    assert argv[argv.index("--threads") + 1] == "8"
    assert argv[argv.index("--worker-shutdown-timeout") + 1] == "25000"


def test_the_launcher_stops_on_a_bad_setting_before_starting_dramatiq():
    """One line naming the variable, exit status 1, and no worker process started."""
    done = run(
        [str(BIN / "python"), "-m", "workers"],
        {
            "DATABASE_URL": "postgresql://u@127.0.0.1:9/none",
            "BROKER_URL": "redis://127.0.0.1:9/0",
            "WORKER_PROCESSES": "0",
        },
        base_env={},
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "taskoverflow worker: configuration error: WORKER_PROCESSES must be at least 1, not 0"
    )


def test_dramatiq_runs_with_short_polling_and_lean_malloc_unless_told_otherwise():
    """The launcher's defaults (docs/BENCHMARKS.md P4, P7), never overriding a deployment's."""
    env = dramatiq_environ({"DRAMATIQ_THREADS": "3"})
    assert (env["dramatiq_worker_timeout"], env["MALLOC_ARENA_MAX"]) == ("50", "2")
    assert env["MALLOC_MMAP_THRESHOLD_"] == "262144"
    assert env["DRAMATIQ_THREADS"] == "3"
    told = dramatiq_environ({"MALLOC_ARENA_MAX": "4", "dramatiq_worker_timeout": "200"})
    assert (told["dramatiq_worker_timeout"], told["MALLOC_ARENA_MAX"]) == ("200", "4")


def test_each_pool_gets_a_fresh_metrics_dir_and_ended_pools_lose_theirs(tmp_path):  # type: ignore[no-untyped-def]
    """A directory named for a pid that has ended goes; one of a live process stays."""
    dead_pid = _ended_pid()
    gone = tmp_path / f"{METRICS_DIR_PREFIX}{dead_pid}-abc"
    kept = tmp_path / f"{METRICS_DIR_PREFIX}1-abc"  # pid 1 is always alive
    other = tmp_path / "something-else"
    for path in (gone, kept, other):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    made = Path(fresh_metrics_dir(str(tmp_path)))
    assert made.name.startswith(f"{METRICS_DIR_PREFIX}{os.getpid()}-")
    assert list(made.iterdir()) == []
    assert not gone.exists()
    assert kept.exists()
    assert other.exists()


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid

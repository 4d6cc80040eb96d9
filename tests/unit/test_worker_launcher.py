"""``python -m workers`` builds the dramatiq command line from the environment."""

from __future__ import annotations

import pytest

from workers.__main__ import dramatiq_argv, dramatiq_environ


def test_counts_and_shutdown_timeout_come_from_the_environment():
    """WORKER_PROCESSES, DRAMATIQ_THREADS and WORKER_SHUTDOWN_TIMEOUT_MS size the pool."""
    argv = dramatiq_argv(
        {"WORKER_PROCESSES": "3", "DRAMATIQ_THREADS": "6", "WORKER_SHUTDOWN_TIMEOUT_MS": "9000"}
    )
    assert argv == [
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
    """Never Dramatiq's one-process-per-CPU default: 1 process, 8 threads."""
    argv = dramatiq_argv({})
    assert argv[argv.index("--processes") + 1] == "1"
    assert argv[argv.index("--threads") + 1] == "8"


@pytest.mark.parametrize("bad", ["0", "-1", "two", ""])
def test_bad_counts_are_refused(bad: str):
    """A count that is not a positive integer stops the launcher with its name."""
    with pytest.raises(SystemExit, match="WORKER_PROCESSES must be a positive integer"):
        dramatiq_argv({"WORKER_PROCESSES": bad})


def test_dramatiq_runs_with_short_polling_and_lean_malloc_unless_told_otherwise():
    """The launcher's defaults (docs/BENCHMARKS.md P4, P7), never overriding a deployment's."""
    argv = dramatiq_argv({"DRAMATIQ_THREADS": "3"})
    env = dramatiq_environ({"DRAMATIQ_THREADS": "3"}, argv)
    assert (env["dramatiq_worker_timeout"], env["MALLOC_ARENA_MAX"]) == ("50", "2")
    assert env["MALLOC_MMAP_THRESHOLD_"] == "262144"
    told = dramatiq_environ({"MALLOC_ARENA_MAX": "4", "dramatiq_worker_timeout": "200"}, argv)
    assert (told["dramatiq_worker_timeout"], told["MALLOC_ARENA_MAX"]) == ("200", "4")
    assert told["DRAMATIQ_THREADS"] == "3"

"""``python -m workers``: start the Dramatiq worker pool with its size taken from the environment.

Container images and the Makefile start workers this way, so the process and thread counts
are ordinary settings (``WORKER_PROCESSES``, ``DRAMATIQ_THREADS``) rather than baked into a
command line. It replaces itself with the dramatiq CLI (exec), so signals reach Dramatiq
directly: SIGTERM stops taking work and hands running jobs back.
"""

from __future__ import annotations

import os
import shutil
import sys

#: Environment variables this launcher reads (besides everything ``Settings`` reads).
LAUNCHER_ENV = ("WORKER_PROCESSES", "DRAMATIQ_THREADS", "WORKER_SHUTDOWN_TIMEOUT_MS")

#: Idle consumers poll Redis at most this far apart (ms). Dramatiq's default of 1000 adds ~0.5 s
#: of pickup latency to a job submitted to an idle pool; 50 keeps a job after idle under
#: ~100 ms end to end (P7 in docs/BENCHMARKS.md) for 20 cheap polls a second per process. SQS
#: long-polls instead (SQS_WAIT_TIME_S).
DEFAULT_POLL_MS = "50"

#: glibc memory settings for a process that builds multi-MB strings on several threads
#: (docs/BENCHMARKS.md, P4). Up to 8 malloc arenas per core, one per thread allocating at
#: once, each keeping its own freed memory: two arenas took the peak RSS over three
#: 100,000-todo calendars from 212 to 175 MiB. glibc also raises its mmap threshold after
#: each large free, so later 16 MB results come from the heap and stay there: the peak
#: then crept up job after job (249 MiB after 8 large calendars). A fixed 256 KiB threshold
#: gives large buffers back on free: 166 MiB peak after 9, and 101 MiB resident between.
MALLOC_DEFAULTS = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144"}


def dramatiq_argv(environ: dict[str, str]) -> list[str]:
    """The dramatiq command line for ``environ``; refuses counts that are not positive."""
    counts = {}
    for name, default in (("WORKER_PROCESSES", "1"), ("DRAMATIQ_THREADS", "8")):
        raw = environ.get(name, default)
        if not raw.isdigit() or int(raw) < 1:
            raise SystemExit(f"taskoverflow worker: {name} must be a positive integer, not {raw!r}")
        counts[name] = raw
    shutdown_ms = environ.get("WORKER_SHUTDOWN_TIMEOUT_MS", "25000")
    if not shutdown_ms.isdigit():
        raise SystemExit("taskoverflow worker: WORKER_SHUTDOWN_TIMEOUT_MS must be an integer")
    return [
        "dramatiq",
        "workers.main",
        "--processes",
        counts["WORKER_PROCESSES"],
        "--threads",
        counts["DRAMATIQ_THREADS"],
        # Our structlog configuration (models.log_config), not Dramatiq's.
        "--skip-logging",
        # Below the container stop timeout (ECS: 30 s by default, 120 s at most), so running
        # jobs are handed back before the SIGKILL.
        "--worker-shutdown-timeout",
        shutdown_ms,
    ]


def dramatiq_environ(environ: dict[str, str], argv: list[str]) -> dict[str, str]:
    """The environment dramatiq runs with: ours fills in what the deployment left unset."""
    environ = dict(environ)
    environ.setdefault("DRAMATIQ_THREADS", argv[argv.index("--threads") + 1])
    environ.setdefault("dramatiq_worker_timeout", DEFAULT_POLL_MS)
    for name, value in MALLOC_DEFAULTS.items():
        environ.setdefault(name, value)
    return environ


def main() -> None:
    argv = dramatiq_argv(dict(os.environ))
    environ = dramatiq_environ(dict(os.environ), argv)
    executable = shutil.which("dramatiq", path=os.path.dirname(sys.executable)) or "dramatiq"
    os.execvpe(executable, argv, environ)  # noqa: S606 (fixed argv, no shell)


if __name__ == "__main__":
    main()

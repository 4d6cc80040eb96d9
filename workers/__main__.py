"""``python -m workers``: start the Dramatiq worker pool with its size taken from the settings.

Container images and the Makefile start workers this way, so the process and thread counts
are ordinary settings (``WORKER_PROCESSES``, ``DRAMATIQ_THREADS``, read by
``models.settings.WorkerSettings``) rather than baked into a command line. The whole
configuration is checked here, once, before any worker process is forked. It then replaces
itself with the dramatiq CLI (exec), so signals reach Dramatiq directly: SIGTERM stops
taking work and hands running jobs back.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

from models.settings import ConfigError, Settings, WorkerSettings

#: Idle consumers poll Redis at most this far apart (ms). Dramatiq's default of 1000 adds up to
#: a second of pickup latency to a job submitted to an idle pool; 50 keeps it small
#: (docs/BENCHMARKS.md, P7) for 20 cheap polls a second per process. SQS long-polls instead
#: (SQS_WAIT_TIME_S).
DEFAULT_POLL_MS = "50"

#: glibc memory settings for a process that builds multi-MB strings on several threads. glibc
#: keeps up to 8 malloc arenas per core, one per thread allocating at once, each holding its
#: own freed memory: two arenas lower the peak. glibc also raises its mmap threshold after each
#: large free, so later large results come from the heap and stay there and the peak creeps up
#: job after job; a fixed 256 KiB threshold gives large buffers back on free. The measured
#: peaks before and after: docs/BENCHMARKS.md, P4.
MALLOC_DEFAULTS = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144"}


def dramatiq_argv(worker: WorkerSettings) -> list[str]:
    """The dramatiq command line for a pool of ``worker``'s size."""
    return [
        "dramatiq",
        "workers.main",
        "--processes",
        str(worker.processes),
        "--threads",
        str(worker.threads),
        # Our structlog configuration (models.log_config), not Dramatiq's.
        "--skip-logging",
        # Below the container stop timeout (ECS: 30 s by default, 120 s at most), so running
        # jobs are handed back before the SIGKILL.
        "--worker-shutdown-timeout",
        str(worker.shutdown_timeout_ms),
    ]


def dramatiq_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment dramatiq runs with: ours fills in what the deployment left unset.

    These are not settings of ours but tuning handed to what runs below us (Dramatiq's poll
    interval, glibc's malloc). ``workers.main`` reads DRAMATIQ_THREADS through the same
    settings, with the same default, so its pool matches ``--threads``.
    """
    environ = dict(environ)
    environ.setdefault("dramatiq_worker_timeout", DEFAULT_POLL_MS)
    for name, value in MALLOC_DEFAULTS.items():
        environ.setdefault(name, value)
    return environ


def main() -> None:
    try:
        worker = Settings.from_env(os.environ).worker
    except ConfigError as exc:
        raise SystemExit(f"taskoverflow worker: configuration error: {exc}") from None
    argv = dramatiq_argv(worker)
    environ = dramatiq_environ(os.environ)
    executable = shutil.which("dramatiq", path=os.path.dirname(sys.executable)) or "dramatiq"
    os.execvpe(executable, argv, environ)  # noqa: S606 (fixed argv, no shell)


if __name__ == "__main__":
    main()

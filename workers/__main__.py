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

#: Idle consumers poll Redis this often (ms). Dramatiq's default of 1000 adds ~0.5 s of pickup
#: latency to a job submitted to an idle pool; SQS long-polls instead (SQS_WAIT_TIME_S).
DEFAULT_POLL_MS = "100"


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


def main() -> None:
    environ = dict(os.environ)
    argv = dramatiq_argv(environ)
    environ.setdefault("DRAMATIQ_THREADS", argv[argv.index("--threads") + 1])
    environ.setdefault("dramatiq_worker_timeout", DEFAULT_POLL_MS)
    executable = shutil.which("dramatiq", path=os.path.dirname(sys.executable)) or "dramatiq"
    os.execvpe(executable, argv, environ)  # noqa: S606 (fixed argv, no shell)


if __name__ == "__main__":
    main()

"""``python -m workers``: start the Dramatiq worker pool with its size taken from the settings.

Container images and the Makefile start workers this way, so the process and thread counts
are ordinary settings (``WORKER_PROCESSES``, ``DRAMATIQ_THREADS``, read by
``models.settings.WorkerSettings``) rather than baked into a command line. The whole
configuration is checked here, once, before any worker process is forked. It then replaces
itself with the dramatiq CLI (exec), so signals reach Dramatiq directly: SIGTERM stops
taking work and hands running jobs back.

Metrics: the launcher makes a fresh private directory for prometheus_client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, read by prometheus_client itself in every process of the
pool) and, unless WORKER_METRICS_PORT is 0, has Dramatiq fork ``workers.metrics_server``
beside the workers: one ``/metrics`` for the whole pool (docs/OBSERVABILITY.md).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from models.settings import ConfigError, Settings, WorkerSettings

#: The fork function that serves the pool's metrics (workers/metrics_server.py).
METRICS_SERVER = "workers.metrics_server:serve"

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


def dramatiq_argv(worker: WorkerSettings, *, metrics_server: bool = False) -> list[str]:
    """The dramatiq command line for a pool of ``worker``'s size; ``metrics_server``: with the
    process that serves the pool's /metrics."""
    forks = ["--fork-function", METRICS_SERVER] if metrics_server else []
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
        *forks,
    ]


def dramatiq_environ(
    environ: Mapping[str, str], *, metrics_dir: str | None = None
) -> dict[str, str]:
    """The environment dramatiq runs with: ours fills in what the deployment left unset.

    These are not settings of ours but tuning handed to what runs below us (Dramatiq's poll
    interval, glibc's malloc). ``workers.main`` reads DRAMATIQ_THREADS through the same
    settings, with the same default, so its pool matches ``--threads``.

    ``metrics_dir``: the pool's directory for prometheus_client's multiprocess files, always
    this one: a directory left by an earlier pool would have its counts added to ours.
    """
    environ = dict(environ)
    environ.setdefault("dramatiq_worker_timeout", DEFAULT_POLL_MS)
    for name, value in MALLOC_DEFAULTS.items():
        environ.setdefault(name, value)
    if metrics_dir is not None:
        environ.update(PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    return environ


#: The pool's metrics directory: this prefix, the launcher's pid (the dramatiq CLI's too, as
#: the launcher execs it), a random part.
METRICS_DIR_PREFIX = "taskoverflow-worker-metrics-"


def fresh_metrics_dir(parent: str | None = None) -> str:
    """A new directory for this pool's metrics files, after removing those of pools that
    have ended: the launcher execs, so nothing of it is left to clean up after its pool, and
    on a long-lived host (a developer's, CI) every start would otherwise leave one behind."""
    parent = parent or tempfile.gettempdir()
    for path in Path(parent).glob(f"{METRICS_DIR_PREFIX}*"):
        pid = path.name.removeprefix(METRICS_DIR_PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    return True


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        raise SystemExit(f"taskoverflow worker: configuration error: {exc}") from None
    argv = dramatiq_argv(
        settings.worker, metrics_server=settings.telemetry.worker_metrics_port != 0
    )
    # Under /tmp: the one writable path of the images' read-only root (ECS). The pool's
    # processes share it; it ends with the container (tmpfs, task volume).
    metrics_dir = fresh_metrics_dir()
    environ = dramatiq_environ(os.environ, metrics_dir=metrics_dir)
    executable = shutil.which("dramatiq", path=os.path.dirname(sys.executable)) or "dramatiq"
    os.execvpe(executable, argv, environ)  # noqa: S606 (fixed argv, no shell)


if __name__ == "__main__":
    main()

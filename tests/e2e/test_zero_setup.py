"""Zero setup: one process, SQLite and the in-memory broker, in an empty directory."""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    NO_SERVICES,
    STANDALONE,
    free_port,
    run,
    start_standalone,
    wait_log,
)
from tests.waiting import wait_for, wait_for_task

pytestmark = pytest.mark.e2e


def job_status(db: Path, job_id: str) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT status FROM jobs WHERE id = ?", (job_id.replace("-", ""),)
        ).fetchone()[0]


def test_make_run_without_variables_is_the_single_process():
    """The README's first command picks the zero-setup runner when nothing is configured."""
    # Not as a sub-make of `make test`: that would pass its own flags down.
    env = {k: v for k, v in NO_SERVICES.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = run(["make", "--no-print-directory", "-n", "run"], base_env=env, check=True)
    assert done.stdout.splitlines()[-1].endswith("python ops/dev/standalone.py"), done.stdout


def test_serves_the_page_and_api_and_resumes_a_job_after_a_restart(tmp_path: Path):
    """Empty directory: page, API and a calendar job; killed mid-job, it finishes on restart."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_standalone(tmp_path, port)
    try:
        assert "<h1>TaskOverflow</h1>" in httpx.get(f"{base}/").text
        created = httpx.post(
            f"{base}/api/v1/todos",
            json={"title": "Zero setup", "deadline_at": "2030-01-01T09:00:00"},
        )
        assert created.status_code == 201
        task = httpx.post(f"{base}/api/v1/todos/ical").json()
        status = wait_for_task(httpx.get, task["task_url"])
        assert status["task_status"] == "SUCCESS", status
        assert "SUMMARY:Zero setup" in httpx.get(status["result_url"]).text

        db = tmp_path / "taskoverflow.sqlite3"
        with sqlite3.connect(db) as conn:  # a calendar big enough to interrupt
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
                "INSERT INTO todos (title, completed, deadline_at, created_at, updated_at) "
                "SELECT 'Todo ' || i, 0, '2030-01-01 00:00:00', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00' FROM n"
            )
        job_id = httpx.post(f"{base}/api/v1/todos/ical").json()["task_id"]
        wait_for(
            lambda: job_status(db, job_id),
            lambda status: status == "STARTED",
            timeout=30,
            interval=0.01,
            what=f"job {job_id} to start",
        )
        first.stop(signal.SIGKILL)  # the restart: nothing gets a chance to clean up
    finally:
        first.stop(signal.SIGKILL)

    second = start_standalone(tmp_path, port)
    try:
        wait_log(second, "resumed unfinished jobs")
        status = wait_for_task(httpx.get, f"{base}/api/v1/todos/ical/{job_id}/status", timeout=60)
        assert status["task_status"] == "SUCCESS", status
        result = httpx.get(status["result_url"], timeout=30).text
        assert result.count("BEGIN:VEVENT") == 200_001
    finally:
        stopped = second.stop(signal.SIGINT)  # Ctrl-C, how `make run` is stopped
    assert stopped == 0, second.log()
    assert "Traceback" not in second.log()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "taskoverflow.sqlite3"
    ]


def test_production_never_falls_back_to_sqlite(tmp_path: Path):
    """TASKOVERFLOW_ENV=production without DATABASE_URL/BROKER_URL: exit 1, a clear message."""
    done = run(
        [sys.executable, STANDALONE],
        {"TASKOVERFLOW_ENV": "production"},
        cwd=tmp_path,
        base_env=NO_SERVICES,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "taskoverflow: DATABASE_URL and BROKER_URL not set, and TASKOVERFLOW_ENV=production "
        "never falls back to SQLite or the in-memory broker"
    )
    assert list(tmp_path.iterdir()) == []

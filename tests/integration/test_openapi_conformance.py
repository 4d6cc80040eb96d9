"""The served OpenAPI description is what the API does: schemathesis, every check, against the
real API and worker processes on the test Postgres and Redis.

Schemathesis generates requests from /schema/openapi.json (valid ones, invalid ones,
unsupported methods and media types, and stateful sequences through the links it infers
and the ones documented: create a todo, then read, update and delete it; submit a job, then
read, cancel and retry it) and checks every answer: no 5xx, status
codes, media types, headers and bodies as documented, invalid input refused, valid input
accepted, ``Allow`` complete, deleted resources gone. Any failure fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.processes import BIN, Process, start_worker
from tests.services import ROOT

pytestmark = pytest.mark.e2e

#: Per operation and phase; enough to cover every operation's parameters and bodies (about
#: 1,000 requests in all) while the run stays within seconds. The seed makes it repeatable.
MAX_EXAMPLES = 50
SEED = 20_240_419
#: Requests per stateful scenario (schemathesis' default: 6). A job's walk is submit, read,
#: cancel, retry, read, cancel... with every other link of the API to choose from at each
#: step: longer scenarios reach its far end (a retry) in every run, not only in some.
STATEFUL_MAX_STEPS = 30
#: The worker's idle poll during the run (Dramatiq's dramatiq_worker_timeout, ms).
WALK_POLL_MS = "3000"
#: Gives every schema-valid Idempotency-Key a fresh value (the module says why).
HOOKS = "tests.integration.schemathesis_hooks"


def test_every_schemathesis_check_passes(
    api: str,
    service_env: dict[str, str],
    processes: list[Process],
    tmp_path: Path,
    engine: Engine,
):
    """`st run --checks all` over the served schema: every operation tested, in every phase
    that applies, and not one failure or error; the stateful phase walks the jobs' links
    (submit, cancel, retry) with real ids."""
    # A worker, so calendar jobs can finish and their results be checked too. It looks for
    # messages every WALK_POLL_MS when idle: long beside a walk's steps (milliseconds), so a
    # job the walk submits is still queued when the walk's next steps cancel and retry it.
    # With the default 50 ms poll a small job often finished first, the cancel was refused
    # (rightly: 409), and whether the walk reached a cancel and a retry was a race.
    processes.append(start_worker({**service_env, "dramatiq_worker_timeout": WALK_POLL_MS}))
    report = tmp_path / "schemathesis.json"
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"[phases.stateful]\nmax-steps = {STATEFUL_MAX_STEPS}\n")
    run = subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(config),
            "run",
            f"{api}/schema/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=tmp_path,  # schemathesis keeps its example database in the working directory
        env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.txt").write_text(output)  # kept by pytest, for a failed run
    assert run.returncode == 0, output
    result = json.loads(report.read_text())
    assert result["complete"] is True, output
    assert result["failures"] == [], output
    assert result["errors"] == [], output
    operations = result["operations"]
    assert operations["total"] >= 10, operations  # every documented operation was loaded
    assert operations["tested"] == operations["selected"] == operations["total"], operations
    assert operations["errored"] == 0, operations
    phases = {name: phase["status"] for name, phase in result["phases"].items()}
    # Every phase ran and passed (the examples phase uses the documented response examples).
    assert phases == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, phases
    assert result["test_cases"]["generated"] >= 10 * MAX_EXAMPLES, result["test_cases"]
    # The report does not say which links were followed, the jobs do: only a walk along the
    # links reaches a real job, since every other phase makes its ids up (or replays those
    # of the examples, which name no job). A cancel recorded on a job, and a retry of one
    # (possible only once it is cancelled or failed), are the walk's own steps.
    with engine.connect() as conn:
        cancelled, retries = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE cancel_requested_at IS NOT NULL),"
                " count(*) FILTER (WHERE retry_of IS NOT NULL) FROM jobs"
            )
        ).one()
    assert cancelled > 0, "the stateful phase cancelled no job"
    assert retries > 0, "the stateful phase retried no job"


def test_head_over_the_real_server_has_get_headers_and_no_content(api: str):
    """Through uvicorn too: HEAD answers GET's status and Content-Length, and no content."""
    with httpx.Client(base_url=api, timeout=10) as client:
        for path in ("/", "/api/v1/todos", "/api/v1/health", "/schema/openapi.json"):
            get = client.get(path)
            head = client.head(path)
            assert (head.status_code, head.content) == (get.status_code, b""), path
            assert head.headers["content-length"] == str(len(get.content)), path
            assert head.headers["content-type"] == get.headers["content-type"], path
        # A stream's header section is answered at once, though the stream (of a job that no
        # worker runs here) would never end.
        task = client.post("/api/v1/todos/ical").json()
        head = client.head(f"/api/v1/jobs/{task['task_id']}/events", timeout=5)
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")
        assert head.content == b""

"""The served OpenAPI description is what the API does: schemathesis, every check, against the
real API and worker processes on the test Postgres and Redis.

Schemathesis generates requests from /schema/openapi.json (valid ones, invalid ones,
unsupported methods and media types, and stateful sequences through the links it infers:
create a todo, then read, update and delete it) and checks every answer: no 5xx, status
codes, media types, headers and bodies as documented, invalid input refused, valid input
accepted, ``Allow`` complete, deleted resources gone. Any failure fails the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.processes import BIN, Process, start_worker

pytestmark = pytest.mark.e2e

#: Per operation and phase; enough to cover every operation's parameters and bodies (about
#: 1,000 requests in all) while the run stays within seconds. The seed makes it repeatable.
MAX_EXAMPLES = 50
SEED = 20_240_419


def test_every_schemathesis_check_passes(
    api: str, service_env: dict[str, str], processes: list[Process], tmp_path: Path
):
    """`st run --checks all` over the served schema: every operation tested, in every phase
    that applies, and not one failure or error."""
    # A worker, so calendar jobs can finish and their results be checked too.
    processes.append(start_worker(service_env))
    report = tmp_path / "schemathesis.json"
    run = subprocess.run(
        [
            str(BIN / "st"),
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
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
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
    # No examples are written into the schema; everything else must have run and passed.
    assert phases == {
        "examples": "skip",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }, phases
    assert result["test_cases"]["generated"] >= 10 * MAX_EXAMPLES, result["test_cases"]


def test_head_over_the_real_server_has_get_headers_and_no_content(api: str):
    """Through uvicorn too: HEAD answers GET's status and Content-Length, and no content."""
    with httpx.Client(base_url=api, timeout=10) as client:
        for path in ("/", "/api/v1/todos", "/api/v1/health", "/schema/openapi.json"):
            get = client.get(path)
            head = client.head(path)
            assert (head.status_code, head.content) == (get.status_code, b""), path
            assert head.headers["content-length"] == str(len(get.content)), path
            assert head.headers["content-type"] == get.headers["content-type"], path

"""Hostile input against the real API process: schemathesis over the OpenAPI, and a list."""

from __future__ import annotations

import json
import subprocess

import httpx
import icalendar
import pytest

from tests.processes import BIN, Process, start_worker
from tests.services import ROOT
from tests.waiting import wait_for_task

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(api: str):
    """Every operation, generated and stateful inputs: no 5xx, every status and body documented."""
    done = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{api}/schema/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "6400",
            "--no-color",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "passed" in done.stdout


HOSTILE_BODIES = [
    (b'{"title": "' + b"x" * (1 << 20) + b'"}', 413),
    (b"[" * 100_000, 413),  # over API_MAX_BODY_BYTES before nesting matters
    (b"[" * 8_000 + b"]" * 8_000, 400),  # nested too deeply, within the size limit
    (b'{"a":' * 2_500 + b"1" + b"}" * 2_500, 400),
    (b'{"title": "line\\r\\nbreak"}', 400),
    (b'{"title": "bell\\u0007"}', 400),
    (b'{"title": "nul\\u0000"}', 400),
    (b'{"title": "lone \\ud800 surrogate"}', 400),
    (b'{"title": "t", "deadline_at": "10000-01-01T00:00:00"}', 400),
    (b'{"title": "t", "deadline_at": "0000-01-01T00:00:00"}', 400),
    (b'{"title": "t", "deadline_at": "2024-02-30T00:00:00"}', 400),
    (b'{"title": "t", "deadline_at": "9999-12-31T23:59:59-23:59"}', 400),
    (b'{"title": "t", "deadline_at": 1e308}', 400),
    (b'{"title": 1e400}', 400),
    (b"\xff\xfe not utf-8", 400),
]


@pytest.mark.parametrize(("body", "status"), HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_bodies_get_a_4xx_with_a_message(api: str, body: bytes, status: int):
    """Huge, deeply nested, control characters, impossible dates: a 4xx that says why."""
    response = httpx.post(
        f"{api}/api/v1/todos",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text[:200]
    assert response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/todos/99999999999999999999999999999",
        "/api/v1/todos/-9223372036854775809",
        "/api/v1/todos/ical/00000000-0000-0000-0000-000000000000/status",
        "/api/v1/todos/ical/not-a-uuid/result",
        "/api/v1/todos/ical/%00%0d%0a/status",
        "/api/v1/todos/ical/" + "a" * 5000 + "/status",
    ],
)
def test_unknown_and_malformed_ids_are_404(api: str, path: str):
    """Ids beyond int64, unknown and malformed job ids: 404 with an error body."""
    response = httpx.get(api + path, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]


def test_calendar_stays_valid_for_hostile_titles(
    api: str, service_env: dict[str, str], processes: list[Process]
):
    """Accepted-but-hostile text (emoji, RTL, specials, max length) renders a valid calendar."""
    processes.append(start_worker(service_env))
    titles = ["😀" * 80, "\u202eevil rtl", "; , \\ : \" ' < >", "Zalgo t̷̢̛e̴x̸t", "\u00a0\u2028\u2029"]
    for i, title in enumerate(titles):
        response = httpx.post(
            f"{api}/api/v1/todos",
            json={
                "title": title,
                "description": "tab\there\nnewline",
                "deadline_at": f"2030-01-0{i + 1}T00:00:00Z",
            },
        )
        assert response.status_code == 201, response.text
    task = httpx.post(f"{api}/api/v1/todos/ical").json()
    status = wait_for_task(httpx.get, task["task_url"])
    assert status["task_status"] == "SUCCESS", status
    raw = httpx.get(status["result_url"]).content
    for line in raw.split(b"\r\n")[:-1]:
        assert len(line) <= 75
    events = icalendar.Calendar.from_ical(raw).walk("VEVENT")
    assert sorted(str(e["SUMMARY"]) for e in events) == sorted(titles)
    assert json.dumps([str(e["DESCRIPTION"]) for e in events]).count("tab\\there\\nnewline") == 5

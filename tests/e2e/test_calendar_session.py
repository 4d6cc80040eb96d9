"""The contract's curl session against real API and worker processes."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import icalendar
import pytest

from tests.processes import Process, start_worker
from tests.waiting import wait_for_task

pytestmark = pytest.mark.e2e

HOSTILE = [
    {
        "title": "Semicolons; commas, back\\slash",
        "description": "line one\nline two; three, four",
        "deadline_at": "2024-04-19T14:00:00",
    },
    {
        "title": "Ünïcødé 😀 日本語 " + "長" * 40,
        "description": "é" * 120,
        "deadline_at": "2024-04-20 09:30:00.000",
    },
    {"title": "Offset deadline", "description": "", "deadline_at": "2024-04-21T10:00:00+10:00"},
    {"title": "No deadline", "description": "left out of the calendar"},
    {"title": "Null deadline", "deadline_at": None},
]


def test_contract_calendar_session(api: str, service_env: dict[str, str], processes: list[Process]):
    """POST /todos/ical -> status until SUCCESS -> result: a valid RFC 5545 calendar."""
    processes.append(start_worker(service_env, threads=2))
    with httpx.Client(base_url=api, timeout=10) as client:
        created = []
        for body in HOSTILE:
            response = client.post("/api/v1/todos", json=body)
            assert response.status_code == 201, response.text
            created.append(response.json())

        submitted = client.post("/api/v1/todos/ical")
        assert submitted.status_code == 202
        task = submitted.json()
        assert task["task_url"].startswith(api + "/api/v1/todos/ical/")
        assert submitted.headers["location"] == task["task_url"]

        status = wait_for_task(client.get, task["task_url"])
        assert status["task_status"] == "SUCCESS", status
        assert status["task_id"] == task["task_id"]
        result = client.get(status["result_url"])

    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/calendar")
    raw = result.content
    # Every line ends in CRLF and is at most 75 octets (RFC 5545 §3.1).
    assert raw.endswith(b"\r\n")
    for line in raw.split(b"\r\n")[:-1]:
        assert not line.endswith(b"\r")
        assert b"\n" not in line
        assert len(line) <= 75, line
    calendar = icalendar.Calendar.from_ical(raw)
    events = {str(e["UID"]): e for e in calendar.walk("VEVENT")}
    dated = [t for t in created if t["deadline_at"]]
    assert set(events) == {f"{t['id']}@taskoverflow.local" for t in dated}
    for todo in dated:
        event = events[f"{todo['id']}@taskoverflow.local"]
        assert str(event["SUMMARY"]) == todo["title"]
        start = event["DTSTART"].dt
        assert start.tzinfo is not None
        assert start.utcoffset().total_seconds() == 0
        assert start == datetime.fromisoformat(todo["deadline_at"]).replace(tzinfo=UTC)
        assert "DTSTAMP" in event
        if todo["description"]:
            assert str(event["DESCRIPTION"]) == todo["description"]
        else:
            assert "DESCRIPTION" not in event
    assert b"None" not in raw

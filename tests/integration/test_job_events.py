"""GET /api/v1/jobs/{id}/events: job state and progress pushed as Server-Sent Events, read
with httpx from a real API process (uvicorn) fed by a real worker, or by the lifecycle's own
transitions when a test needs to say exactly when a job changes."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from models import lifecycle
from models.results import gzip_text
from tests.integration.jobs import insert_job, insert_todos, submit
from tests.processes import Process, free_port, start_api, start_standalone, start_worker
from tests.waiting import wait_for

#: Reads wait at most this long for the next line: a stream that stalls fails the test.
READ_TIMEOUT_S = 20
#: A stream that has not ended this long after it opened fails the test (keep-alive comments
#: every 15 s would otherwise keep a stuck one open for ever).
STREAM_DEADLINE_S = 90
#: The hub re-reads a job every 5 s even without a notification; an event that arrives well
#: within that came from NOTIFY.
PUSHED_WITHIN_S = 2.0
FINAL = ("SUCCESS", "FAILURE", "CANCELLED")


@dataclass
class Event:
    name: str
    id: str | None
    data: dict[str, Any]
    retry: str | None
    at: float  # time.monotonic() when it arrived


class EventStream:
    """An open events stream, read as a browser would: its events, and its comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._items = self._parse(response.iter_lines())
        self.deadline = time.monotonic() + STREAM_DEADLINE_S

    def _parse(self, lines: Iterator[str]) -> Iterator[Event | str]:
        """Each event, and each comment line (as its text), as it arrives."""
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in lines:
            if time.monotonic() > self.deadline:
                raise AssertionError(f"the stream was still open after {STREAM_DEADLINE_S} s")
            if line.startswith(":"):
                yield line[1:].strip()
            elif line:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
            elif data:  # a blank line dispatches the event (a block without data: nothing)
                yield Event(
                    fields.get("event", "message"),
                    fields.get("id"),
                    json.loads("\n".join(data)),
                    fields.get("retry"),
                    time.monotonic(),
                )
                fields, data = {}, []
            else:
                fields = {}

    def next(self) -> Event | None:
        """The next event, or None when the server ended the stream."""
        return next((item for item in self._items if isinstance(item, Event)), None)

    def next_comment(self) -> str | None:
        """The next comment (a keep-alive), or None when the server ended the stream."""
        return next((item for item in self._items if isinstance(item, str)), None)

    def rest(self) -> list[Event]:
        """Every event until the server ends the stream."""
        events = []
        while (event := self.next()) is not None:
            events.append(event)
        return events


@contextmanager
def events_of(base: str, job_id: uuid.UUID | str) -> Iterator[EventStream]:
    timeout = httpx.Timeout(10, read=READ_TIMEOUT_S)
    with httpx.stream("GET", f"{base}/api/v1/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        yield EventStream(response)


def log_records(proc: Process, message: str) -> list[dict[str, Any]]:
    """The process's JSON log records whose message is ``message``."""
    records = []
    for line in proc.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == message:
            records.append(record)
    return records


def wait_log_record(proc: Process, message: str, count: int = 1) -> dict[str, Any]:
    """The ``count``-th record of ``message`` in the process's log, once it is there."""
    records = wait_for(
        lambda: log_records(proc, message),
        lambda seen: len(seen) >= count,
        timeout=15,
        what=f"{proc.name} to log {message!r} {count} time(s)",
        details=proc.log,
    )
    return records[count - 1]


def test_a_calendar_job_streams_started_progress_and_success_in_order(
    api: str, service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Opened on a queued job: PENDING, then STARTED, progress reports while it renders,
    SUCCESS, and the end of the stream, each as the jobs resource shows the job."""
    insert_todos(engine, 300_000)
    job_id = submit(api)  # no worker yet: the stream sees the job before it starts
    with events_of(api, job_id) as stream:
        first = stream.next()
        assert first is not None
        assert (first.name, first.id, first.retry) == ("status", "1", "1000")
        assert first.data["status"] == "PENDING"
        assert first.data == httpx.get(f"{api}/api/v1/jobs/{job_id}").json()

        processes.append(start_worker(service_env))
        events = [first, *stream.rest()]

    # Counted from 1; the last (the final state) is "end", which a reconnection may name.
    assert [event.id for event in events] == [str(n) for n in range(1, len(events))] + ["end"]
    assert all(event.retry is None for event in events[1:])
    statuses = [event.data["status"] for event in events if event.name == "status"]
    assert statuses == ["PENDING", "STARTED", "SUCCESS"], [(e.name, e.data) for e in events]
    assert events[-1].name == "status"
    assert events[-1].data == httpx.get(f"{api}/api/v1/jobs/{job_id}").json()
    # Progress: reported by the worker while it renders (at most every ~0.5 s), each report
    # a ``progress`` event between STARTED and SUCCESS, counting up.
    started = next(i for i, e in enumerate(events) if e.data["status"] == "STARTED")
    progress = [event for event in events if event.name == "progress"]
    assert progress, "no progress event: does the worker report progress?"
    assert all(started < events.index(event) < len(events) - 1 for event in progress)
    assert all(event.data["status"] == "STARTED" for event in progress)
    done = [event.data["progress"]["done"] for event in progress]
    assert done == sorted(done)


def test_an_unknown_or_malformed_job_id_is_a_404_before_any_stream(api: str):
    for job_id in (uuid.uuid4(), "not-a-job-id"):
        response = httpx.get(f"{api}/api/v1/jobs/{job_id}/events", timeout=10)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"error": "Job not found"}


def test_a_finished_job_streams_one_status_event_then_ends(api: str, engine: Engine):
    for final in FINAL:
        job_id = insert_job(engine, status=final)
        with events_of(api, job_id) as stream:
            events = stream.rest()
        assert [(event.name, event.data["status"]) for event in events] == [("status", final)]
        assert events[0].id == "end"
        # EventSource reconnects after every stream; naming the end, it is told to stop.
        again = httpx.get(
            f"{api}/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "end"}, timeout=10
        )
        assert (again.status_code, again.content) == (204, b"")


def test_changes_are_pushed_and_the_listen_connection_survives_being_killed(
    service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """Each change arrives well within the safety-net re-read, so by NOTIFY; after the
    server kills the LISTEN connection the hub opens another and changes still arrive."""
    port = free_port()
    api_proc = start_api(service_env, port)
    processes.append(api_proc)
    base = f"http://127.0.0.1:{port}"
    job_id = insert_job(engine)
    with events_of(base, job_id) as stream:
        first = stream.next()
        assert first is not None
        assert first.data["status"] == "PENDING"
        listening = wait_log_record(api_proc, "job events: listening")
        with engine.begin() as conn:
            killed = conn.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": listening["server_pid"]}
            ).scalar()
        assert killed is True
        again = wait_log_record(api_proc, "job events: listening", count=2)
        assert again["server_pid"] != listening["server_pid"]
        assert again["connections_opened"] == 2

        changed_at = time.monotonic()
        with engine.begin() as conn:
            assert lifecycle.claim(conn, job_id) is not None
        started = stream.next()
        assert started is not None
        assert (started.name, started.data["status"]) == ("status", "STARTED")
        assert started.at - changed_at < PUSHED_WITHIN_S

        changed_at = time.monotonic()
        with engine.begin() as conn:
            assert lifecycle.report(conn, job_id, "rendering", 10, 100)
        progress = stream.next()
        assert progress is not None
        assert (progress.name, progress.data["status"]) == ("progress", "STARTED")
        assert progress.at - changed_at < PUSHED_WITHIN_S

        changed_at = time.monotonic()
        with engine.begin() as conn:
            assert lifecycle.succeed(
                conn, job_id, gzip_text("BEGIN:VCALENDAR"), keep=timedelta(hours=1)
            )
        rest = stream.rest()
        assert [(e.name, e.data["status"]) for e in rest] == [("status", "SUCCESS")]
        assert rest[0].at - changed_at < PUSHED_WITHIN_S


def test_a_client_that_disconnects_leaves_no_subscription_behind_and_quiet_streams_live(
    service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    port = free_port()
    api_proc = start_api(service_env, port)
    processes.append(api_proc)
    base = f"http://127.0.0.1:{port}"
    job_id = insert_job(engine)  # never runs: its streams stay open until their clients go
    with events_of(base, job_id) as staying, events_of(base, job_id) as leaving:
        first = staying.next()
        assert first is not None
        assert leaving.next() is not None
        leaving.response.close()
        ended = wait_log_record(api_proc, "job events stream ended")
        assert (ended["reason"], ended["subscribers"]) == ("disconnected", 1)
        # Nothing happens to the job: a comment every 15 s keeps proxies from cutting it.
        assert staying.next_comment() == "keep-alive"
        assert 14 < time.monotonic() - first.at < 17
    ended = wait_log_record(api_proc, "job events stream ended", count=2)
    assert (ended["reason"], ended["subscribers"]) == ("disconnected", 0)


def test_streams_end_when_the_api_stops_and_it_stops_promptly(
    service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    """uvicorn waits for open responses before it stops; an open stream must not hold up a
    deployment (SIGTERM) until its job ends."""
    port = free_port()
    api_proc = start_api(service_env, port)
    processes.append(api_proc)
    job_id = insert_job(engine)  # never runs
    with events_of(f"http://127.0.0.1:{port}", job_id) as stream:
        assert stream.next() is not None
        stopping = time.monotonic()
        api_proc.popen.send_signal(signal.SIGTERM)
        assert stream.rest() == []  # ended by the server, without another event
    # uvicorn ends by the signal it got, once it has shut down (its shutdown hooks ran).
    assert api_proc.popen.wait(10) == -signal.SIGTERM, api_proc.log()
    assert time.monotonic() - stopping < 5
    assert "Application shutdown complete." in api_proc.log()
    assert wait_log_record(api_proc, "job events stream ended")["reason"] == "shutdown"


def test_zero_setup_streams_a_job_to_success_by_polling_sqlite(tmp_path: Path):
    """No NOTIFY on SQLite: the hub polls the row, and the worker shares the process."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_standalone(tmp_path, port)
    try:
        with sqlite3.connect(tmp_path / "taskoverflow.sqlite3") as conn:  # seconds of work
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
                "INSERT INTO todos (title, completed, deadline_at, created_at, updated_at) "
                "SELECT 'Todo ' || i, 0, '2030-01-01 00:00:00', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00' FROM n"
            )
        job_id = submit(base)
        with events_of(base, job_id) as stream:
            events = stream.rest()
        statuses = [event.data["status"] for event in events if event.name == "status"]
        assert statuses[0] in ("PENDING", "STARTED"), statuses
        assert statuses[-1] == "SUCCESS", statuses
        assert statuses == sorted(statuses, key=["PENDING", "STARTED", "SUCCESS"].index)
        assert events[-1].data == httpx.get(f"{base}/api/v1/jobs/{job_id}").json()
        # Progress, polled: the worker reports it while rendering (as on Postgres).
        assert any(event.name == "progress" for event in events), [e.name for e in events]
    finally:
        assert proc.stop(signal.SIGINT) == 0, proc.log()

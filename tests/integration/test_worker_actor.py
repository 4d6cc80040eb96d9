"""The calendar actor under a real Dramatiq Worker with our full middleware stack."""

from __future__ import annotations

import threading
import uuid

import dramatiq
import pytest
from dramatiq.middleware import Middleware
from sqlalchemy import Connection, Engine

from models import JobKind
from models.queue import job_message
from models.results import StoredResult
from models.settings import Settings
from tests.integration.jobs import insert_job, insert_todos, job_row
from tests.waiting import wait_for_job
from tests.workers import redis_worker, stub_worker
from workers.middleware import current_resources
from workers.runner import Progress, run_job


class ProcessedMessages(Middleware):
    """Counts the messages the worker has finished with, whatever the outcome."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def after_process_message(self, broker, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        with self.changed:
            done = self.changed.wait_for(lambda: self.count >= count, timeout)
        assert done, f"{self.count} of {count} messages processed after {timeout} s"


def test_same_message_delivered_twice_gives_one_identical_success(
    engine: Engine, settings: Settings
):
    """Two copies of one job's message (also at the same time) leave one SUCCESS row."""
    insert_todos(engine, 2000)
    job_id = insert_job(engine)
    with stub_worker(settings, threads=4) as broker:
        message = job_message(settings.broker.queue_name, JobKind.ICAL, job_id)
        broker.enqueue(message)
        broker.enqueue(message)
        broker.join(settings.broker.queue_name, fail_fast=True)
        row = wait_for_job(engine, job_id, timeout=30)
        first_result = row.result
        broker.enqueue(message)  # and once more after it finished
        broker.join(settings.broker.queue_name, fail_fast=True)
    row = job_row(engine, job_id)
    assert (row.status, row.attempts) == ("SUCCESS", 1)
    assert row.result == first_result
    assert row.result.count("BEGIN:VEVENT") == 2000


def test_duplicates_over_real_redis_run_once(engine: Engine, settings: Settings):
    """Five concurrent copies of one message over Redis: one run, one SUCCESS."""
    insert_todos(engine, 5000)
    job_id = insert_job(engine)
    processed = ProcessedMessages()
    with redis_worker(settings, threads=4) as broker:
        broker.add_middleware(processed)
        for _ in range(5):
            broker.enqueue(job_message(settings.broker.queue_name, JobKind.ICAL, job_id))
        processed.wait_for(5)  # every copy consumed, not just the first to finish
    row = job_row(engine, job_id)
    assert (row.status, row.attempts) == ("SUCCESS", 1)


def test_a_job_that_always_fails_ends_failure_with_its_reason(engine: Engine, settings: Settings):
    """After JOB_MAX_RETRIES retries the job is FAILURE and says why; nothing loops."""
    job_id = insert_job(engine)

    def always_fails(job: str) -> None:
        def work(conn: Connection, progress: Progress) -> StoredResult:
            raise RuntimeError("the calendar service is on fire")

        resources = current_resources()
        run_job(resources.engine, uuid.UUID(job), work, keep=resources.settings.jobs.result_ttl)

    with stub_worker(settings) as broker:
        dramatiq.actor(always_fails, broker=broker, queue_name="poison")
        always_fails_actor = broker.get_actor("always_fails")
        always_fails_actor.send(str(job_id))
        with pytest.raises(RuntimeError, match="on fire"):
            broker.join("poison", fail_fast=True)  # re-raises the dead-lettered error
    row = job_row(engine, job_id)
    retries = settings.jobs.max_retries
    assert row.status == "FAILURE"
    assert row.attempts == retries + 1
    assert (
        row.error
        == f"failed after {retries + 1} attempts: RuntimeError: the calendar service is on fire"
    )


def test_a_message_with_a_bad_job_id_fails_without_retries(engine: Engine, settings: Settings):
    """An undecodable job id is a permanent error: dead-lettered at once, no retries."""
    with stub_worker(settings) as broker:
        broker.get_actor("render_calendar").send("not-a-uuid")
        with pytest.raises(Exception, match="not a job id"):
            broker.join(settings.broker.queue_name, fail_fast=True)
        assert len(broker.dead_letters) == 1
        assert broker.dead_letters[0].options.get("retries", 0) == 0


def test_the_actor_reaches_the_renderer_in_three_calls(engine: Engine, settings: Settings):
    """actor -> run_job -> calendar_result -> render_lines: the worker path stays short.

    Counted on the real call stack (our own frames only) when the renderer is entered."""
    insert_todos(engine, 3)
    job_id = insert_job(engine)
    paths: list[list[str]] = []

    def profile(frame, event, _arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_name == "render_lines":
            path, caller = [], frame
            while caller is not None and caller.f_code.co_name != "render_calendar":
                if "/workers/" in caller.f_code.co_filename:
                    path.append(caller.f_code.co_name)
                caller = caller.f_back
            paths.append(["render_calendar", *reversed(path)])

    threading.setprofile(profile)
    try:
        with stub_worker(settings) as broker:
            broker.enqueue(job_message(settings.broker.queue_name, JobKind.ICAL, job_id))
            broker.join(settings.broker.queue_name, fail_fast=True)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    assert job_row(engine, job_id).status == "SUCCESS"
    # A generator: entered again at each event it yields, always from the same place.
    assert paths
    assert all(
        path == ["render_calendar", "run_job", "calendar_result", "render_lines"] for path in paths
    )

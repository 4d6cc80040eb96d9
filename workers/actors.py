"""The actors: thin shells from a message to ``run_job`` with the work of the job's kind.

Each is registered under the name ``models.queue.ACTOR_BY_KIND`` gives its kind, which is
how senders address it. The path from an actor to the code that renders is three calls:
actor -> ``run_job`` -> the work (``calendar_result``) -> ``render_lines``, compressed as
it goes (``gzip_lines``).
"""

from __future__ import annotations

import uuid
from functools import partial

import dramatiq

from models import JobKind
from models.queue import ACTOR_BY_KIND
from workers.calendar import calendar_result
from workers.errors import PermanentJobError
from workers.middleware import current_resources
from workers.runner import run_job


def render_calendar(job_id: str) -> None:
    """Run calendar job ``job_id`` (the message carries only the id, never the todos)."""
    resources = current_resources()
    jobs = resources.settings.jobs
    render = partial(
        calendar_result,
        uid_domain=jobs.calendar_uid_domain,
        max_events=resources.settings.limits.calendar_max_events,
    )
    run_job(resources.engine, parse_job_id(job_id), render, keep=jobs.result_ttl)


def parse_job_id(job_id: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise PermanentJobError(f"not a job id: {job_id!r}") from None


def register_actors(broker: dramatiq.Broker, queue_name: str) -> None:
    """Declare every actor on ``broker`` (once per process, after the broker is built)."""
    declare = dramatiq.actor(
        broker=broker,
        actor_name=ACTOR_BY_KIND[JobKind.ICAL],
        queue_name=queue_name,
        # Not worth retrying: fail the message at once (and dead-letter it).
        throws=(PermanentJobError,),
    )
    declare(render_calendar)

"""The ``render_calendar`` actor: renders a calendar job's iCal text into its jobs row."""

from __future__ import annotations

import uuid

import dramatiq

from models.queue import CALENDAR_ACTOR
from workers.calendar import calendar_work
from workers.errors import PermanentJobError
from workers.lifecycle import run_job
from workers.middleware import current_resources


def render_calendar(job_id: str) -> None:
    """Run calendar job ``job_id`` (the message carries only the id, never the todos)."""
    try:
        job_uuid = uuid.UUID(job_id)
    except (TypeError, ValueError, AttributeError):
        raise PermanentJobError(f"not a job id: {job_id!r}") from None
    resources = current_resources()
    run_job(resources.engine, job_uuid, calendar_work(resources.settings.jobs.calendar_uid_domain))


def register_calendar_actor(broker: dramatiq.Broker, queue_name: str) -> dramatiq.Actor:
    declare = dramatiq.actor(
        broker=broker,
        actor_name=CALENDAR_ACTOR,
        queue_name=queue_name,
        # Not worth retrying: fail the message at once (and dead-letter it).
        throws=(PermanentJobError,),
    )
    return declare(render_calendar)

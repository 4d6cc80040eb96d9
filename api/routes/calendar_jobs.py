"""/api/v1/todos/ical: submit a calendar job, poll its status, fetch its result (§3)."""

from __future__ import annotations

import os
import uuid

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy import select

from api.errors import ApiError
from api.openapi_docs import errors
from api.schemas import TaskCreated, TaskStatus
from models import Job, JobKind, JobStatus
from models.clock import utcnow

log = structlog.get_logger("api")


def _base_url(state: State, request: Request) -> str:
    return state.resources.settings.api.public_base_url or str(request.base_url).rstrip("/")


def _urls(state: State, request: Request, job_id: uuid.UUID) -> tuple[str, str]:
    base = f"{_base_url(state, request)}/api/v1/todos/ical/{job_id}"
    return f"{base}/status", f"{base}/result"


def _job_id(task_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, "Task not found") from None


class CalendarJobController(Controller):
    path = "/api/v1/todos/ical"
    tags = ("calendar jobs",)

    @post(
        sync_to_thread=True,
        status_code=HTTP_202_ACCEPTED,
        summary="Start a calendar export job",
        description="202 with the job's status URL (also in Location); 503 if the job queue "
        "cannot be reached (the job is then marked FAILURE, nothing waits for it).",
        responses=errors(503),
    )
    def submit(self, state: State, request: Request) -> Response[TaskCreated]:
        resources = state.resources
        now = utcnow()
        with resources.session() as session:
            job = Job(kind=JobKind.ICAL, status=JobStatus.PENDING, created_at=now, enqueued_at=now)
            session.add(job)
            # Commit first: a worker that receives the message must find the row.
            session.commit()
            if resources.settings.api.faults == "crash-after-commit":
                # Reliability tests: die exactly where a crash would strand the job (the
                # reconciler must send it). Never enabled in production (settings refuse it).
                os._exit(70)
            try:
                resources.sender.send_calendar_job(job.id)
            except Exception as exc:
                log.warning("job queue unavailable", job_id=str(job.id), error=repr(exc))
                job.status = JobStatus.FAILURE
                job.error = "the job queue could not be reached when the job was submitted"
                job.finished_at = utcnow()
                session.commit()
                raise ApiError(
                    503,
                    "job queue unavailable: the calendar job could not be queued, "
                    "try again shortly",
                    {"Retry-After": "5"},
                ) from exc
        status_url, _ = _urls(state, request, job.id)
        return Response(
            TaskCreated(task_id=str(job.id), task_url=status_url),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": status_url},
        )

    @get(
        "/{task_id:str}/status",
        sync_to_thread=True,
        summary="A calendar job's state",
        responses=errors(404, 503),
    )
    def status(self, state: State, request: Request, task_id: FromPath[str]) -> TaskStatus:
        job_id = _job_id(task_id)
        with state.resources.session() as session:
            row = session.execute(
                select(Job.status, Job.error).where(Job.id == job_id)
            ).one_or_none()
        if row is None:
            raise ApiError(404, "Task not found")
        _, result_url = _urls(state, request, job_id)
        reason = row.error if row.status in (JobStatus.RETRY, JobStatus.FAILURE) else None
        return TaskStatus(
            task_id=str(job_id), task_status=row.status, result_url=result_url, reason=reason
        )

    @get(
        "/{task_id:str}/result",
        sync_to_thread=True,
        summary="A finished calendar job's iCalendar text",
        media_type="text/calendar",
        responses=errors(404, 503),
    )
    def result(self, state: State, task_id: FromPath[str]) -> Response[str]:
        job_id = _job_id(task_id)
        with state.resources.session() as session:
            row = session.execute(
                select(Job.status, Job.result, Job.error).where(Job.id == job_id)
            ).one_or_none()
        if row is None:
            raise ApiError(404, "Task not found")
        if row.status == JobStatus.FAILURE:
            # Not "not finished": the job is over and will never have a result.
            raise ApiError(404, f"Task failed: {row.error or 'no reason recorded'}")
        if row.status != JobStatus.SUCCESS:
            raise ApiError(404, "Task not finished")
        return Response(
            row.result or "",
            media_type="text/calendar",
            headers={"Content-Disposition": f'inline; filename="taskoverflow-{job_id}.ics"'},
        )

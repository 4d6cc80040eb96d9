"""/api/v1/todos/ical: submit a calendar job, poll its status, fetch its result (docs/API.md)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from api import queries
from api.database import Database
from api.errors import ApiError
from api.openapi_docs import errors
from api.schemas import TaskCreated, TaskStatus
from api.state import JobSender
from models import JobKind, JobStatus
from models.clock import utcnow

log = structlog.get_logger("api")


@dataclass(frozen=True)
class CalendarJobs:
    """What submitting and polling a job use: the database (the job's row), the sender (its
    message) and the base of the URLs handed out (PUBLIC_BASE_URL, else the request's).

    One dependency, not three: Litestar resolves a handler's independent dependencies
    concurrently, starting a task group for every request, an overhead out of all proportion
    to a handler that runs one statement (and every client polls its job's status).
    """

    db: Database
    sender: JobSender
    public_base_url: str | None

    def base_url(self, request: Request) -> str:
        """scheme://host[:port] of the URLs handed out."""
        return self.public_base_url or str(request.base_url).rstrip("/")

    def urls(self, request: Request, job_id: uuid.UUID) -> tuple[str, str]:
        """The job's status and result URLs."""
        return calendar_job_urls(self.base_url(request), job_id)


def calendar_job_urls(base_url: str, job_id: uuid.UUID) -> tuple[str, str]:
    """A calendar job's status and result URLs on the course's routes, under ``base_url``."""
    base = f"{base_url}/api/v1/todos/ical/{job_id}"
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
        status_code=HTTP_202_ACCEPTED,
        summary="Start a calendar export job",
        description="202 with the job's status URL (also in Location); 503 if the job queue "
        "cannot be reached (the job is then marked FAILURE, nothing waits for it).",
        responses=errors(503),
    )
    async def submit(
        self, request: Request, jobs: NamedDependency[CalendarJobs]
    ) -> Response[TaskCreated]:
        job_id = uuid.uuid4()
        # Committed first (the insert is its own transaction): a worker that receives the
        # message must find the row.
        await jobs.db.execute(queries.INSERT_JOB, id=job_id, kind=JobKind.ICAL.value, now=utcnow())
        try:
            # Broker clients block (redis-py, boto3): send from the thread pool, not the loop.
            await asyncio.get_running_loop().run_in_executor(
                None, jobs.sender.send_calendar_job, job_id
            )
        except Exception as exc:
            log.warning("job queue unavailable", job_id=str(job_id), error=repr(exc))
            await jobs.db.execute(
                queries.FAIL_UNSENT_JOB,
                job_id=job_id,
                error="the job queue could not be reached when the job was submitted",
                now=utcnow(),
            )
            raise ApiError(
                503,
                "job queue unavailable: the calendar job could not be queued, try again shortly",
                {"Retry-After": "5"},
            ) from exc
        status_url, _ = jobs.urls(request, job_id)
        return Response(
            TaskCreated(task_id=str(job_id), task_url=status_url),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": status_url},
        )

    @get("/{task_id:str}/status", summary="A calendar job's state", responses=errors(404, 503))
    async def status(
        self, request: Request, task_id: FromPath[str], jobs: NamedDependency[CalendarJobs]
    ) -> TaskStatus:
        job_id = _job_id(task_id)
        row = await jobs.db.fetch_one(queries.JOB_STATUS, id=job_id)
        if row is None:
            raise ApiError(404, "Task not found")
        status, error = row
        _, result_url = jobs.urls(request, job_id)
        reason = error if status in (JobStatus.RETRY, JobStatus.FAILURE) else None
        return TaskStatus(
            task_id=str(job_id), task_status=status, result_url=result_url, reason=reason
        )

    @get(
        "/{task_id:str}/result",
        summary="A finished calendar job's iCalendar text",
        media_type="text/calendar",
        responses=errors(404, 503),
    )
    async def result(self, task_id: FromPath[str], db: NamedDependency[Database]) -> Response[str]:
        job_id = _job_id(task_id)
        row = await db.fetch_one(queries.JOB_RESULT, id=job_id)
        if row is None:
            raise ApiError(404, "Task not found")
        status, result, error = row
        if status == JobStatus.FAILURE:
            # Not "not finished": the job is over and will never have a result.
            raise ApiError(404, f"Task failed: {error or 'no reason recorded'}")
        if status != JobStatus.SUCCESS:
            raise ApiError(404, "Task not finished")
        return Response(
            result or "",
            media_type="text/calendar",
            headers={"Content-Disposition": f'inline; filename="taskoverflow-{job_id}.ics"'},
        )

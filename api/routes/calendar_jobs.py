"""/api/v1/todos/ical: submit a calendar job, poll its status, fetch its result (docs/API.md).

The course's contract, exactly: its clients know five task states (PENDING, STARTED, RETRY,
SUCCESS, FAILURE) and poll until SUCCESS or FAILURE, so a job they cannot name in those
terms is shown as the nearest one they act on correctly (CANCELLED: FAILURE, with the real
state in an extra field they ignore).
"""

from __future__ import annotations

import uuid
import zlib
from datetime import datetime, timedelta

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream
from litestar.status_codes import HTTP_202_ACCEPTED

from api import queries
from api.access import client_of
from api.admission import SUBMIT_ADMITTED, check_calendar_size, insert_job
from api.errors import ApiError
from api.idempotency import IDEMPOTENCY_RESPONSES, idempotent_operation
from api.job_context import Jobs, parse_job_id
from api.openapi_docs import errors, with_links_and_examples
from api.results import RESULT_HEAD, accepts_gzip, decompressed, stored_slices
from api.schemas import TaskCreated, TaskStatus, running_progress
from models import JobKind, JobStatus
from models.clock import utcnow
from models.results import GZIP_WBITS, READ_CHUNK
from models.tracing import publishing

log = structlog.get_logger("api")


def kept_for(ttl: timedelta) -> str:
    """A retention period in words: "1 day", "6 hours", "90 seconds"."""
    seconds = int(ttl.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def expired(expires_at: datetime | None, now: datetime) -> bool:
    """A finished job's result is served until ``expires_at``; unfinished jobs have none."""
    return expires_at is not None and expires_at <= now


#: A submission's answer, and the first steps of a stateful walk (schemathesis follows
#: these links with the new job's id: read it, cancel it, retry it).
_TASK_LINKS = {
    "202": {
        "GetJob": ("getJob", {"job_id": "$response.body#/task_id"}),
        "CancelJob": ("cancelJob", {"job_id": "$response.body#/task_id"}),
        "RetryJob": ("retryJob", {"job_id": "$response.body#/task_id"}),
        "ListJobs": ("listJobs", {}),
    }
}
_TASK_EXAMPLE = TaskCreated(
    task_id="2e80aefd-6b1c-4a47-9a57-1d1e5b0b8a11",
    task_url="http://localhost:6400/api/v1/todos/ical/2e80aefd-6b1c-4a47-9a57-1d1e5b0b8a11/status",
)


class CalendarJobController(Controller):
    path = "/api/v1/todos/ical"
    tags = ("calendar jobs",)

    @post(
        status_code=HTTP_202_ACCEPTED,
        operation_id="submitCalendarJob",
        summary="Start a calendar export job",
        description="202 with the job's status URL (also in Location); 503 if the job queue "
        "cannot be reached (the job is then marked FAILURE, nothing waits for it) or the "
        "backlog is full (JOBS_MAX_UNFINISHED; Retry-After); 422 if the calendar would exceed "
        "CALENDAR_MAX_EVENTS; 429 if this client has JOBS_MAX_UNFINISHED_PER_CLIENT jobs "
        "unfinished or is over its rate limit (Retry-After).",
        responses={**errors(400, 422, 429, 503), **IDEMPOTENCY_RESPONSES},
        # Idempotency-Key is handled in front of Litestar (api.idempotency): documented only.
        operation_class=idempotent_operation(
            with_links_and_examples(_TASK_LINKS, {"202": _TASK_EXAMPLE})
        ),
    )
    async def submit(self, request: Request, jobs: NamedDependency[Jobs]) -> Response[TaskCreated]:
        job_id = uuid.uuid4()
        client = client_of(request)
        # Refused before anything is written or queued: too many events, too many jobs.
        await check_calendar_size(jobs.db, jobs.limits)
        # The row and the message carry the trace (its send span's): the worker continues it.
        with publishing(jobs.sender.broker, jobs.sender.queue_name, job_id) as traceparent:
            # Committed first (insert_job's statement is its own transaction): a worker that
            # receives the message must find the row.
            await insert_job(
                jobs.db,
                jobs.limits,
                client,
                SUBMIT_ADMITTED,
                id=job_id,
                kind=JobKind.ICAL.value,
                now=utcnow(),
                traceparent=traceparent,
            )
            await jobs.send(
                JobKind.ICAL,
                job_id,
                unsent="the job queue could not be reached when the job was submitted",
                refusal="job queue unavailable: the calendar job could not be queued, "
                "try again shortly",
                traceparent=traceparent,
            )
        status_url, _ = jobs.urls(request, job_id)
        return Response(
            TaskCreated(task_id=str(job_id), task_url=status_url),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": status_url},
        )

    @get(
        "/{task_id:str}/status",
        operation_id="getCalendarJobStatus",
        summary="A calendar job's state",
        description="task_status is one of the course's five states; a CANCELLED job is "
        "FAILURE (reason: cancelled on request) with job_status CANCELLED. While it runs, "
        "progress says how far it is.",
        responses=errors(404, 503),
    )
    async def status(
        self, request: Request, task_id: FromPath[str], jobs: NamedDependency[Jobs]
    ) -> TaskStatus:
        job_id = parse_job_id(task_id, "Task not found")
        row = await jobs.db.fetch_one(queries.JOB_STATUS, id=job_id)
        if row is None:
            raise ApiError(404, "Task not found")
        status, error, stage, done, total = row
        _, result_url = jobs.urls(request, job_id)
        # The course's clients poll until SUCCESS or FAILURE: a sixth state would have them
        # poll forever, so a cancelled job is a failure to them, with the reason saying why.
        cancelled = status == JobStatus.CANCELLED
        task_status = JobStatus.FAILURE.value if cancelled else status
        reason = error if task_status in (JobStatus.RETRY, JobStatus.FAILURE) else None
        return TaskStatus(
            task_id=str(job_id),
            task_status=task_status,
            result_url=result_url,
            reason=reason,
            job_status=status if cancelled else None,
            progress=running_progress(status, stage, done, total),
        )

    @get(
        "/{task_id:str}/result",
        operation_id="getCalendarJobResult",
        summary="A finished calendar job's iCalendar text",
        description="404 until the job is SUCCESS (or for good after FAILURE); 410 once a "
        "finished job's result has expired (JOB_RESULT_TTL_S after it finished). Sent with "
        "Content-Encoding: gzip to a client whose Accept-Encoding allows it (as stored: ~15x "
        "fewer bytes), as plain text otherwise; large results are streamed.",
        media_type="text/calendar",
        responses=errors(404, 410, 503),
    )
    async def result(
        self, request: Request, task_id: FromPath[str], jobs: NamedDependency[Jobs]
    ) -> Response[bytes] | Stream:
        job_id = parse_job_id(task_id, "Task not found")
        row = await jobs.db.fetch_one(RESULT_HEAD, id=job_id, count=READ_CHUNK)
        if row is None:
            raise ApiError(404, "Task not found")
        status, error, expires_at, size, stored, first = row
        if expired(expires_at, utcnow()):
            # Every finished job: its outcome (result, or the reason there is none) is kept
            # for the same time; the record (GET /api/v1/jobs/{id}) outlives it.
            raise ApiError(
                410,
                f"Task result expired at {expires_at.isoformat()}; results are kept for "
                f"{kept_for(jobs.result_ttl)} after the task finishes: start a new export",
            )
        if status in (JobStatus.FAILURE, JobStatus.CANCELLED):
            # Not "not finished": the job is over and will never have a result.
            raise ApiError(404, f"Task failed: {error or 'no reason recorded'}")
        if status != JobStatus.SUCCESS or first is None:
            raise ApiError(404, "Task not finished")
        gzip = accepts_gzip(request.headers.get("accept-encoding"))
        headers = {
            "Content-Disposition": f'inline; filename="taskoverflow-{job_id}.ics"',
            "Vary": "Accept-Encoding",
            **({"Content-Encoding": "gzip"} if gzip else {}),
        }
        first = bytes(first)
        if len(first) == stored:  # the whole result came with the state: answer at once
            body = first if gzip else zlib.decompress(first, GZIP_WBITS)
            return Response(body, media_type="text/calendar", headers=headers)
        # A large result: streamed, a slice at a time (api.results), never loaded whole.
        slices = stored_slices(jobs.db, job_id, first, stored)
        return Stream(
            slices if gzip else decompressed(slices),
            media_type="text/calendar",
            headers={**headers, "Content-Length": str(stored if gzip else size)},
        )

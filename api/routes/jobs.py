"""/api/v1/jobs: every job of every kind, listed, read, cancelled and retried (docs/API.md).

The course's routes (/api/v1/todos/ical/...) stay as they are; this resource shows the same
rows with what those routes leave out (timestamps, attempts, queue wait and run time,
progress, retention) and the operations they lack: cancel and retry. Each operation is one
lifecycle statement (models.lifecycle); a refusal costs one more read, to say why.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, overload

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIFormat, OpenAPIType
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from api import queries
from api.access import client_of
from api.admission import RETRY_ADMITTED, check_calendar_size, insert_job
from api.errors import ApiError
from api.job_context import Jobs, calendar_job_urls, parse_job_id
from api.job_list import (
    MAX_PAGE_SIZE,
    PAGE_TOKEN_PATTERN,
    encode_page_token,
    parse_job_filters,
)
from api.openapi_docs import errors, query_param, with_links_and_examples
from api.schemas import JobLinks, JobOut, JobPage, running_progress
from models import JobKind, JobStatus
from models.clock import utcnow
from models.job import RETRYABLE_STATUSES
from models.tracing import publishing, trace_id_of

#: Seconds a client should wait before asking again about an unfinished job.
POLL_AFTER_S = "1"


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return None if start is None or end is None else round((end - start).total_seconds() * 1000)


def job_out(row: Any, base_url: str) -> JobOut:
    """A ``queries.JOB_COLUMNS`` row as the resource shows it."""
    (
        job_id,
        kind,
        status,
        attempts,
        error,
        created_at,
        started_at,
        finished_at,
        expires_at,
        stage,
        done,
        total,
        cancel_requested_at,
        retry_of,
        traceparent,
        result_bytes,
    ) = row
    state = JobStatus(status)
    own = f"{base_url}/api/v1/jobs/{job_id}"
    status_url, result_url = (
        calendar_job_urls(base_url, job_id) if kind == JobKind.ICAL else (None, None)
    )
    links = JobLinks(
        self=own,
        events=f"{own}/events",
        status=status_url,
        result=result_url,
        # Only what the job's state allows: a client can offer exactly the links it finds.
        cancel=None if state.is_final else f"{own}/cancel",
        retry=f"{own}/retry" if state in RETRYABLE_STATUSES else None,
    )
    return JobOut(
        id=str(job_id),
        kind=kind,
        status=status,
        attempts=attempts,
        error=error,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        queue_wait_ms=_ms(created_at, started_at),
        run_ms=_ms(started_at, finished_at),
        progress=running_progress(status, stage, done, total),
        cancel_requested=cancel_requested_at is not None,
        retry_of=None if retry_of is None else str(retry_of),
        expires_at=expires_at,
        trace_id=trace_id_of(traceparent),
        result_bytes=result_bytes,
        links=links,
    )


_EXAMPLE_ID = uuid.UUID("2e80aefd-6b1c-4a47-9a57-1d1e5b0b8a11")
_EXAMPLE_BASE = "http://localhost:6400"


def _example(**changes: Any) -> JobOut:
    """A JobOut as the API would show it (built by ``job_out``, so it is always right).

    Kept a struct, not a dict: Litestar drops None from the dicts it writes into the schema,
    which would leave out the nulls that every JobOut has (msgspec encodes the struct)."""
    row: dict[str, Any] = {
        "id": _EXAMPLE_ID,
        "kind": "ical",
        "status": "SUCCESS",
        "attempts": 1,
        "error": None,
        "created_at": datetime(2026, 11, 29, 10, 0, 0, 120000),
        "started_at": datetime(2026, 11, 29, 10, 0, 0, 151000),
        "finished_at": datetime(2026, 11, 29, 10, 0, 0, 163000),
        "expires_at": datetime(2026, 11, 30, 10, 0, 0, 163000),
        "stage": None,
        "progress_done": None,
        "progress_total": None,
        "cancel_requested_at": None,
        "retry_of": None,
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "result_bytes": 1620,
        **changes,
    }
    return job_out(tuple(row[column.key] for column in queries.JOB_COLUMNS), _EXAMPLE_BASE)


_RUNNING = _example(
    status="STARTED",
    finished_at=None,
    expires_at=None,
    stage="rendering",
    progress_done=1200,
    progress_total=5000,
    result_bytes=None,
)
_CANCELLING = msgspec.structs.replace(_RUNNING, cancel_requested=True)
_CANCELLED = _example(
    status="CANCELLED",
    attempts=0,
    error="cancelled on request",
    started_at=None,
    cancel_requested_at=datetime(2026, 11, 29, 10, 0, 0, 163000),
    result_bytes=None,
)
_RETRY = _example(
    id=uuid.UUID("7c1f0b5e-3d2a-4e8b-b8f4-0a9e6c2d4f11"),
    status="PENDING",
    attempts=0,
    started_at=None,
    finished_at=None,
    expires_at=None,
    retry_of=_EXAMPLE_ID,
    result_bytes=None,
)

# Where a job's answer leads (OpenAPI links, followed by schemathesis' stateful phase).
_BY_ID = {"job_id": "$response.body#/id"}
_CANCEL_OR_RETRY = {"CancelJob": ("cancelJob", _BY_ID), "RetryJob": ("retryJob", _BY_ID)}
_READ_OR_RETRY = {"GetJob": ("getJob", _BY_ID), "RetryJob": ("retryJob", _BY_ID)}
_READ_OR_CANCEL = {"GetJob": ("getJob", _BY_ID), "CancelJob": ("cancelJob", _BY_ID)}
#: From a page to its newest job: read, cancel or retry it.
_FIRST = {"job_id": "$response.body#/jobs/0/id"}
_FROM_PAGE = {
    "GetFirstJob": ("getJob", _FIRST),
    "CancelFirstJob": ("cancelJob", _FIRST),
    "RetryFirstJob": ("retryJob", _FIRST),
}


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)

    @get(
        operation_id="listJobs",
        summary="List jobs, newest first, a page at a time",
        responses=errors(400, 503),
        operation_class=with_links_and_examples(
            {"200": _FROM_PAGE},
            {"200": JobPage(jobs=[_RUNNING, _example()], next_page_token=None)},
        ),
    )
    async def list_jobs(
        self,
        request: Request,
        jobs: NamedDependency[Jobs],
        status: Annotated[
            str | None, query_param("only jobs in this state", enum=[s.value for s in JobStatus])
        ] = None,
        kind: Annotated[
            str | None, query_param("only jobs of this kind", enum=[k.value for k in JobKind])
        ] = None,
        created_after: Annotated[
            str | None,
            query_param(
                "only jobs created after this ISO-8601 date-time (without an offset: UTC)",
                format=OpenAPIFormat.DATE_TIME,
            ),
        ] = None,
        created_before: Annotated[
            str | None,
            query_param(
                "only jobs created before this ISO-8601 date-time (without an offset: UTC)",
                format=OpenAPIFormat.DATE_TIME,
            ),
        ] = None,
        page_size: Annotated[
            str | None,
            query_param(
                f"jobs per page, 1 to {MAX_PAGE_SIZE} (default 20)",
                OpenAPIType.INTEGER,
                minimum=1,
                maximum=MAX_PAGE_SIZE,
            ),
        ] = None,
        page_token: Annotated[
            str | None,
            query_param(
                "next_page_token of the previous page; jobs created since the walk began are "
                "never mixed in, so every job is listed exactly once",
                pattern=PAGE_TOKEN_PATTERN,
            ),
        ] = None,
    ) -> JobPage:
        filters = parse_job_filters(
            status, kind, created_after, created_before, page_size, page_token
        )
        params = filters.params()
        # One row more than the page: whether there is a next page, without a count.
        rows = await jobs.db.fetch_all(queries.job_list(frozenset(params)), **params)
        base_url = jobs.base_url(request)
        page = [job_out(row, base_url) for row in rows[: filters.page_size]]
        more = len(rows) > filters.page_size
        last = rows[filters.page_size - 1] if more else None
        return JobPage(
            jobs=page,
            next_page_token=None if last is None else encode_page_token(last[5], last[0]),
        )

    @get(
        "/{job_id:str}",
        operation_id="getJob",
        summary="One job: state, progress, timing, attempts, links",
        description="Answers for as long as the job's record is kept (JOB_RECORD_TTL_S after "
        "it finished), also after its result has expired (expires_at).",
        responses=errors(404, 503),
        operation_class=with_links_and_examples({"200": _CANCEL_OR_RETRY}, {"200": _RUNNING}),
    )
    async def get_job(
        self, request: Request, job_id: FromPath[str], jobs: NamedDependency[Jobs]
    ) -> Response[JobOut]:
        row = await jobs.db.fetch_one(queries.JOB_BY_ID, id=parse_job_id(job_id))
        if row is None:
            raise ApiError(404, "Job not found")
        job = job_out(row, jobs.base_url(request))
        final = JobStatus(job.status).is_final
        return Response(job, headers={} if final else {"Retry-After": POLL_AFTER_S})

    @post(
        "/{job_id:str}/cancel",
        status_code=HTTP_200_OK,
        operation_id="cancelJob",
        summary="Cancel a job",
        description="Queued (PENDING, RETRY): 200, the job now CANCELLED. Running (STARTED): "
        "202, the job with cancel_requested true; its worker stops at its next progress "
        "report and the job becomes CANCELLED (poll Location). Finished: 409.",
        responses={
            202: ResponseSpec(
                data_container=JobOut,
                description="Running: the cancel is asked for; the job stops shortly",
                generate_examples=False,
                examples=[Example(value=_CANCELLING)],
            ),
            **errors(404, 409, 503),
        },
        operation_class=with_links_and_examples(
            {"200": _READ_OR_RETRY, "202": _READ_OR_RETRY}, {"200": _CANCELLED}
        ),
    )
    async def cancel_job(
        self, request: Request, job_id: FromPath[str], jobs: NamedDependency[Jobs]
    ) -> Response[JobOut]:
        parsed = parse_job_id(job_id)
        now = utcnow()
        row = await jobs.db.execute(
            queries.CANCEL_JOB, job_id=parsed, now=now, expires_at=now + jobs.result_ttl
        )
        if row is None:
            # Nothing changed: read only to say why (missing, or finished meanwhile).
            current = await jobs.db.fetch_one(queries.JOB_BY_ID, id=parsed)
            if current is None:
                raise ApiError(404, "Job not found")
            status = current[2]
            raise ApiError(409, f"job is already {status}: only an unfinished job can be cancelled")
        job = job_out(row, jobs.base_url(request))
        if JobStatus(job.status).is_final:
            return Response(job)  # it was queued: cancelled, no worker involved
        # Running: the worker decides when it stops; poll the job until it is CANCELLED.
        return Response(
            job,
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": job.links.self, "Retry-After": POLL_AFTER_S},
        )

    @post(
        "/{job_id:str}/retry",
        status_code=HTTP_202_ACCEPTED,
        operation_id="retryJob",
        summary="Run a FAILURE or CANCELLED job again, as a new job",
        description="202, the new job (PENDING, retry_of naming this one; also in Location). "
        "The job itself stays as it was: finished jobs never change. 409 unless the job is "
        "FAILURE or CANCELLED, or when it was already retried (Location: that retry). 503 if "
        "the job queue cannot be reached (the new job is then FAILURE); the limits of a "
        "submission apply (422, 429, 503 with Retry-After).",
        responses=errors(404, 409, 422, 429, 503),
        operation_class=with_links_and_examples({"202": _READ_OR_CANCEL}, {"202": _RETRY}),
    )
    async def retry_job(
        self, request: Request, job_id: FromPath[str], jobs: NamedDependency[Jobs]
    ) -> Response[JobOut]:
        parsed = parse_job_id(job_id)
        new_id = uuid.uuid4()
        client = client_of(request)
        # A missing or unretryable job is 404/409 whatever the limits; a retryable one is a
        # new job, and meets the limits a submission meets, before anything is written.
        refusal = await _retry_refused(jobs, request, parsed, before=True)
        if refusal is not None:
            raise refusal
        await check_calendar_size(jobs.db, jobs.limits)
        # The new job's row and message carry the trace of this request (as a submission's).
        with publishing(jobs.sender.broker, jobs.sender.queue_name, new_id) as traceparent:
            # A new job, committed before its message is sent (as a submission is): a worker
            # that receives the message must find the row.
            row = await insert_job(
                jobs.db,
                jobs.limits,
                client,
                RETRY_ADMITTED,
                id=new_id,
                retry_of=parsed,
                now=utcnow(),
                traceparent=traceparent,
            )
            if row is not None:
                kind, *columns = row
                await jobs.send(
                    kind,
                    new_id,
                    unsent="the job queue could not be reached when the job was retried",
                    refusal=f"job queue unavailable: the retry (job {new_id}) could not be "
                    "queued and is recorded as FAILURE; retry that job shortly",
                    traceparent=traceparent,
                )
        if row is None:  # refused: the client's mistake, not the send span's error
            raise await _retry_refused(jobs, request, parsed)
        job = job_out(columns, jobs.base_url(request))
        return Response(job, status_code=HTTP_202_ACCEPTED, headers={"Location": job.links.self})


@overload
async def _retry_refused(
    jobs: Jobs, request: Request, job_id: uuid.UUID, *, before: Literal[True]
) -> ApiError | None: ...
@overload
async def _retry_refused(jobs: Jobs, request: Request, job_id: uuid.UUID) -> ApiError: ...
async def _retry_refused(
    jobs: Jobs, request: Request, job_id: uuid.UUID, *, before: bool = False
) -> ApiError | None:
    """Why job ``job_id`` made no retry: missing (404), not retryable or retried (409).
    ``before`` the attempt: None if it would make one."""
    row = await jobs.db.fetch_one(queries.RETRY_REFUSAL, id=job_id)
    if row is None:
        return ApiError(404, "Job not found")
    status, retry_id = row
    if JobStatus(status) not in RETRYABLE_STATUSES:
        return ApiError(409, f"job is {status}: only a FAILURE or CANCELLED job can be retried")
    if retry_id is None:
        if before:
            return None
        # A retryable job makes a retry unless it has one; unless it was retried meanwhile.
        return ApiError(409, "job could not be retried, try again")
    retry_url = f"{jobs.base_url(request)}/api/v1/jobs/{retry_id}"
    return ApiError(
        409,
        f"job was already retried as job {retry_id}: retry that one if it failed too",
        {"Location": retry_url},
    )

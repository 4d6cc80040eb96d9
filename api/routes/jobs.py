"""/api/v1/jobs: every job of every kind, listed and read (docs/API.md).

The course's routes (/api/v1/todos/ical/...) stay as they are; this resource shows the same
rows with what those routes leave out: timestamps, attempts, queue wait and run time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, QueryParameter

from api import queries
from api.errors import ApiError
from api.job_list import (
    MAX_PAGE_SIZE,
    PAGE_TOKEN_PATTERN,
    encode_page_token,
    parse_job_filters,
)
from api.openapi_docs import errors
from api.routes.calendar_jobs import CalendarJobs, calendar_job_urls
from api.schemas import JobLinks, JobOut, JobPage
from models import JobKind, JobStatus

#: Seconds a client should wait before asking again about an unfinished job.
POLL_AFTER_S = "1"


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return None if start is None or end is None else round((end - start).total_seconds() * 1000)


def job_out(row: Any, base_url: str) -> JobOut:
    """A ``JOB_COLUMNS`` row as the resource shows it."""
    job_id, kind, status, attempts, error, created_at, started_at, finished_at = row
    own = f"{base_url}/api/v1/jobs/{job_id}"
    if kind == JobKind.ICAL:
        status_url, result_url = calendar_job_urls(base_url, job_id)
        links = JobLinks(self=own, status=status_url, result=result_url)
    else:
        links = JobLinks(self=own)
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
        links=links,
    )


def _text_query(description: str, **schema: Any) -> Any:
    # Documented as exactly what it accepts; parsed by api.job_list (our 400 messages).
    return QueryParameter(
        description=description,
        schema_extra={"one_of": None, "type": OpenAPIType.STRING, **schema},
    )


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)

    @get(summary="List jobs, newest first, a page at a time", responses=errors(400, 503))
    async def list_jobs(
        self,
        request: Request,
        jobs: NamedDependency[CalendarJobs],
        status: Annotated[
            str | None, _text_query("only jobs in this state", enum=[s.value for s in JobStatus])
        ] = None,
        kind: Annotated[
            str | None, _text_query("only jobs of this kind", enum=[k.value for k in JobKind])
        ] = None,
        created_after: Annotated[
            str | None,
            _text_query(
                "only jobs created after this ISO-8601 date-time (without an offset: UTC)",
                format=OpenAPIFormat.DATE_TIME,
            ),
        ] = None,
        created_before: Annotated[
            str | None,
            _text_query(
                "only jobs created before this ISO-8601 date-time (without an offset: UTC)",
                format=OpenAPIFormat.DATE_TIME,
            ),
        ] = None,
        page_size: Annotated[
            str | None,
            QueryParameter(
                description=f"jobs per page, 1 to {MAX_PAGE_SIZE} (default 20)",
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.INTEGER,
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                },
            ),
        ] = None,
        page_token: Annotated[
            str | None,
            _text_query(
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
        summary="One job: state, timing, attempts, links",
        responses=errors(404, 503),
    )
    async def get_job(
        self, request: Request, job_id: FromPath[str], jobs: NamedDependency[CalendarJobs]
    ) -> Response[JobOut]:
        try:
            parsed = uuid.UUID(job_id)
        except ValueError:
            raise ApiError(404, "Job not found") from None
        row = await jobs.db.fetch_one(queries.JOB_BY_ID, id=parsed)
        if row is None:
            raise ApiError(404, "Job not found")
        job = job_out(row, jobs.base_url(request))
        final = JobStatus(job.status).is_final
        return Response(job, headers={} if final else {"Retry-After": POLL_AFTER_S})

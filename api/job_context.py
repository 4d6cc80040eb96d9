"""``Jobs``: what every job route uses, as one Litestar dependency (``jobs``).

The routes of the course's calendar jobs (api.routes.calendar_jobs), of the jobs resource
(api.routes.jobs) and of job events (api.routes.job_events) all read and write job rows,
send job messages and hand out absolute URLs; this is where they get those from.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta

import structlog
from litestar import Request

from api import queries
from api.database import Database
from api.errors import ApiError
from api.state import JobSender
from models.clock import utcnow
from models.settings import LimitSettings

log = structlog.get_logger("api")


@dataclass(frozen=True)
class Jobs:
    """What the job routes use: the database (the job's row), the sender (its message), the
    base of the URLs handed out (PUBLIC_BASE_URL, else the request's) and how long a
    finished job's result is kept (JOB_RESULT_TTL_S: the API finishes jobs too, by a
    cancel or a failed send, and stamps their expiry), and the limits new jobs are admitted
    under (api.admission).

    One dependency, not four: Litestar resolves a handler's independent dependencies
    concurrently, starting a task group for every request, an overhead out of all proportion
    to a handler that runs one statement (and every client polls its job's status).
    """

    db: Database
    sender: JobSender
    public_base_url: str | None
    result_ttl: timedelta
    limits: LimitSettings

    def base_url(self, request: Request) -> str:
        """scheme://host[:port] of the URLs handed out."""
        return self.public_base_url or str(request.base_url).rstrip("/")

    def urls(self, request: Request, job_id: uuid.UUID) -> tuple[str, str]:
        """The job's status and result URLs."""
        return calendar_job_urls(self.base_url(request), job_id)

    async def send(
        self,
        kind: str,
        job_id: uuid.UUID,
        *,
        unsent: str,
        refusal: str,
        traceparent: str | None = None,
    ) -> None:
        """Send committed job ``job_id``'s message. If the broker cannot take it, the job is
        FAILURE with the reason ``unsent`` (nothing would ever run it, so nothing may wait
        for it) and the request is answered 503 ``refusal``."""
        try:
            # Broker clients block (redis-py, boto3): send from the thread pool, not the loop.
            await asyncio.get_running_loop().run_in_executor(
                None, self.sender.send, kind, job_id, traceparent
            )
        except Exception as exc:
            log.warning("job queue unavailable", job_id=str(job_id), error=repr(exc))
            now = utcnow()
            await self.db.execute(
                queries.FAIL_UNSENT_JOB,
                job_id=job_id,
                error=unsent,
                now=now,
                expires_at=now + self.result_ttl,
            )
            raise ApiError(503, refusal, {"Retry-After": "5"}) from exc


def parse_job_id(raw: str, not_found: str = "Job not found") -> uuid.UUID:
    """A job id from a path; anything that is not a uuid names no job: 404 ``not_found``."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, not_found) from None


def calendar_job_urls(base_url: str, job_id: uuid.UUID) -> tuple[str, str]:
    """A calendar job's status and result URLs on the course's routes, under ``base_url``."""
    base = f"{base_url}/api/v1/todos/ical/{job_id}"
    return f"{base}/status", f"{base}/result"

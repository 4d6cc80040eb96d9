"""GET /api/v1/jobs/{id}/events: a job's state and progress, pushed as Server-Sent Events.

The stream opens with the job as it is (a ``status`` event), then sends one event per change
until the job is final: ``status`` when anything but its progress changed (its status, or a
cancel request), ``progress`` when only its progress did. Each event's data is the job as
``GET /api/v1/jobs/{id}`` shows it; ids count from 1, and the final status's is ``END_ID``.
After it the stream ends. A comment every ``KEEPALIVE_S`` seconds keeps proxies from closing
a quiet stream.

A stream that ends early (the process stopping, a network cut) is resumed by the browser's
EventSource after ``retry`` ms; the new stream opens with the job's state then, so nothing
is lost. Only ``Last-Event-ID: end`` means something: the client has seen the end (204).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_204_NO_CONTENT

from api import queries
from api.database import Database, DatabaseUnavailable
from api.errors import ApiError
from api.job_context import Jobs, parse_job_id
from api.job_events import JobEvents
from api.openapi_docs import errors
from api.routes.jobs import job_out
from models import JobStatus

log = structlog.get_logger("api")

#: Seconds without an event after which a comment is sent.
KEEPALIVE_S = 15.0
#: How long a browser waits before it reconnects a stream that ended early (ms).
RETRY_MS = 1000
#: The id of a stream's last event (the job's final state). EventSource reconnects whenever a
#: stream ends, also after its last event; a reconnection that names this id is answered
#: 204, which is how a server tells EventSource to stop (a client that closes its stream on
#: the final event, as the web page does, never asks).
END_ID = "end"


@get(
    "/api/v1/jobs/{job_id:str}/events",
    tags=["jobs"],
    summary="A job's state and progress as Server-Sent Events, until it is final",
    description="text/event-stream: a `status` event with the job now, then a `status` or "
    "`progress` event per change, each with the job as GET /api/v1/jobs/{job_id} shows it; "
    f"the stream ends after the job's final status, whose event id is `{END_ID}`. A "
    f"reconnection with `Last-Event-ID: {END_ID}` is answered 204 (EventSource then stops).",
    media_type="text/event-stream",
    responses={
        204: ResponseSpec(
            None, description=f"Last-Event-ID was {END_ID}: the stream has nothing more"
        ),
        **errors(404, 503),
    },
)
async def job_events(
    request: Request,
    job_id: FromPath[str],
    jobs: NamedDependency[Jobs],
    events: NamedDependency[JobEvents],
) -> ServerSentEvent | Response[None]:
    if request.headers.get("last-event-id") == END_ID:
        return Response(None, status_code=HTTP_204_NO_CONTENT)
    parsed = parse_job_id(job_id)
    # Answered before the stream starts: a client gets a plain 404 (or 503), not a stream.
    if await jobs.db.fetch_one(queries.JOB_BY_ID, id=parsed) is None:
        raise ApiError(404, "Job not found")
    return ServerSentEvent(_events(events, jobs.db, parsed, jobs.base_url(request)))


def change(before: dict[str, Any] | None, after: dict[str, Any]) -> str | None:
    """The event a change of the job from ``before`` to ``after`` is (None: no change)."""
    if before is None:
        return "status"
    if before == after:
        return None
    if _without_progress(before) == _without_progress(after):
        return "progress"
    return "status"


def _without_progress(job: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in job.items() if name != "progress"}


async def _events(
    hub: JobEvents, db: Database, job_id: uuid.UUID, base_url: str
) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's events. Cancelled when the client disconnects (Litestar watches for it):
    the subscription then ends with the block, nothing is left behind."""
    ids = itertools.count(1)
    loop = asyncio.get_running_loop()
    reason = "disconnected"
    shown: dict[str, Any] | None = None
    try:
        async with hub.subscribe(job_id) as changes:
            keepalive_at = loop.time() + KEEPALIVE_S
            while True:
                read = await _read(db, job_id, base_url)
                if read is None:
                    reason = "job deleted"  # purged after its record's TTL: nothing more
                    return
                if read is not _UNREADABLE:
                    body, job = read
                    event = change(shown, job)
                    final = JobStatus(job["status"]).is_final
                    if event is not None:
                        first = shown is None
                        shown = job
                        keepalive_at = loop.time() + KEEPALIVE_S
                        number = next(ids)  # counted for the log line, shown unless final
                        yield ServerSentEventMessage(
                            data=body,
                            event=event,
                            id=END_ID if final else number,
                            retry=RETRY_MS if first else None,
                        )
                    if final:
                        reason = "final"
                        return
                if changes.closing:
                    reason = "shutdown"
                    return
                if loop.time() >= keepalive_at:
                    keepalive_at = loop.time() + KEEPALIVE_S
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                await changes.wait(max(0.0, min(hub.recheck_s, keepalive_at - loop.time())))
    finally:
        log.info(
            "job events stream ended",
            job_id=str(job_id),
            reason=reason,
            events=next(ids) - 1,
            subscribers=hub.subscriber_count,
        )


#: A read that failed (the database unavailable): no news, try again at the next wake-up.
_UNREADABLE: Any = object()


async def _read(db: Database, job_id: uuid.UUID, base_url: str) -> Any:
    """(JSON body, decoded) of the job as the jobs resource shows it; None if it is gone."""
    try:
        row = await db.fetch_one(queries.JOB_BY_ID, id=job_id)
    except DatabaseUnavailable as exc:
        # Keep the stream: the database may be back at the next re-read, and a client whose
        # stream ended would reconnect into the same outage (and a 503 ends an EventSource).
        log.warning("job events: database unavailable", job_id=str(job_id), error=str(exc))
        return _UNREADABLE
    if row is None:
        return None
    body = msgspec.json.encode(job_out(row, base_url)).decode()
    return body, msgspec.json.decode(body)

"""Response bodies (msgspec structs: fast to encode, and documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar.openapi.spec import OpenAPIType, Schema

from models import JobStatus

#: The course's timestamp format: ISO 8601 without an offset, meaning UTC.
_NAIVE_UTC = Schema(
    type=OpenAPIType.STRING,
    pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?$",
    description='UTC, ISO 8601 without an offset: "2023-02-27T00:00:00"',
)

# Documented as the strings they are: OpenAPI's "date-time" format requires an offset, which
# the course's format has never had. (msgspec writes naive datetimes exactly so.)
NaiveUTC = Annotated[
    datetime,
    msgspec.Meta(extra_json_schema={"extra": {"format": None, "pattern": _NAIVE_UTC.pattern}}),
]
NaiveUTCOrNull = Annotated[
    datetime | None,
    msgspec.Meta(
        extra_json_schema={"extra": {"one_of": [_NAIVE_UTC, Schema(type=OpenAPIType.NULL)]}}
    ),
]


class TodoOut(msgspec.Struct):
    """A todo as the course's clients know it; built positionally from a row of
    ``api.queries.TODO_COLUMNS``. Timestamps are naive UTC, which msgspec writes exactly as
    ``datetime.isoformat()`` does ("2023-02-27T00:00:00", no offset): the course's format."""

    id: int
    title: str
    description: str | None
    completed: bool
    deadline_at: NaiveUTCOrNull
    created_at: NaiveUTC
    updated_at: NaiveUTC


class Health(msgspec.Struct):
    status: str


class TaskCreated(msgspec.Struct):
    task_id: str
    task_url: str


#: Every job state, as the jobs resource shows them.
JOB_STATES = tuple(status.value for status in JobStatus)
#: The course's five task states: all its clients know (a CANCELLED job shows as FAILURE).
COURSE_TASK_STATES = tuple(state for state in JOB_STATES if state != JobStatus.CANCELLED)

# Documented as enums (Litestar reads msgspec's extra_json_schema["extra"] into the schema).
CourseTaskState = Annotated[
    str, msgspec.Meta(extra_json_schema={"extra": {"enum": list(COURSE_TASK_STATES)}})
]
JobState = Annotated[str, msgspec.Meta(extra_json_schema={"extra": {"enum": list(JOB_STATES)}})]


class Progress(msgspec.Struct):
    """How far the running attempt is: what it is doing, and ``done`` of ``total`` items
    (``total`` null while the worker does not know it yet)."""

    stage: str
    done: int
    total: int | None


def running_progress(
    status: str, stage: str | None, done: int | None, total: int | None
) -> Progress | None:
    """A job row's progress as shown: only while it is STARTED and its worker has reported.
    A RETRY or finished job's last report would describe work no longer going on."""
    if status != JobStatus.STARTED or stage is None:
        return None
    return Progress(stage, done or 0, total)


class TaskStatus(msgspec.Struct, omit_defaults=True):
    """The course's status body. The course's clients read the first four fields; the last
    two are extras they ignore (JSON objects are open), present only when they say more."""

    task_id: str
    #: PENDING, STARTED, RETRY, SUCCESS or FAILURE: never another (a CANCELLED job is FAILURE).
    task_status: CourseTaskState
    result_url: str
    #: Why the job is RETRY or FAILURE (absent otherwise).
    reason: str | None = None
    #: The job's real state when task_status cannot say it (CANCELLED); absent otherwise.
    job_status: JobState | None = None
    #: The running attempt's progress (absent unless STARTED and reported).
    progress: Progress | None = None


class JobLinks(msgspec.Struct, omit_defaults=True):
    #: This job in the jobs resource.
    self: str
    #: Its state and progress as Server-Sent Events (GET).
    events: str
    #: The course's status URL of a calendar job.
    status: str | None = None
    #: Where the result is fetched once the job is SUCCESS.
    result: str | None = None
    #: POST here to cancel it (only while it is unfinished).
    cancel: str | None = None
    #: POST here to run it again as a new job (only when FAILURE or CANCELLED).
    retry: str | None = None


class JobOut(msgspec.Struct):
    """A job of any kind, as the jobs resource shows it (``api.queries.JOB_COLUMNS``)."""

    id: str
    kind: str
    #: PENDING, STARTED, RETRY, SUCCESS, FAILURE or CANCELLED
    status: JobState
    #: How many times a worker has started it.
    attempts: int
    #: Why it is RETRY, FAILURE or CANCELLED; null otherwise.
    error: str | None
    created_at: NaiveUTC
    started_at: NaiveUTCOrNull
    finished_at: NaiveUTCOrNull
    #: Milliseconds from creation to the last start; null until it starts.
    queue_wait_ms: int | None
    #: Milliseconds from the last start to the finish; null until it finishes.
    run_ms: int | None
    #: The running attempt's progress; null unless STARTED and reported by its worker.
    progress: Progress | None
    #: A cancel was asked for (a running job stops at its worker's next progress report).
    cancel_requested: bool
    #: The FAILURE or CANCELLED job this one retries; null for a submitted job.
    retry_of: str | None
    #: When the result (or the reason there is none) stops being served (410 Gone after);
    #: null until the job is finished. The record itself is kept longer.
    expires_at: NaiveUTCOrNull
    #: The W3C trace id (32 hex digits) of the request that submitted it, which its
    #: worker's log lines and spans carry too; null for a job submitted before traces.
    trace_id: str | None
    #: The result's size: bytes of its text (the download's Content-Length unless sent
    #: gzip-encoded); null while there is none (not SUCCESS, or expired).
    result_bytes: int | None
    links: JobLinks


class JobPage(msgspec.Struct):
    """One page of jobs, newest first, and the token of the next (null on the last page)."""

    jobs: list[JobOut]
    next_page_token: str | None

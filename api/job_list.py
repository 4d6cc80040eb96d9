"""The jobs list's query string: filters, page size and the opaque page token.

Pages are keyset pages over (created_at, id), newest first: the token names the last job of
the page, and the next page starts strictly after it. Jobs created during a walk sort before
its first page, so a walk returns every job that existed when it began exactly once, however
many are inserted meanwhile (an OFFSET would repeat rows as new ones push the old down).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from api.errors import ApiError
from api.todo_input import iso_naive_utc
from models import JobKind, JobStatus

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass(frozen=True)
class JobFilters:
    status: str | None = None
    kind: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: The (created_at, id) of the previous page's last job.
    after: tuple[datetime, uuid.UUID] | None = None
    page_size: int = DEFAULT_PAGE_SIZE

    def params(self) -> dict[str, Any]:
        """The statement's parameters; their names pick the statement (api.queries.job_list)."""
        params: dict[str, Any] = {"limit": self.page_size + 1}
        for name in ("status", "kind", "created_after", "created_before"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.after is not None:
            params["after_created_at"], params["after_id"] = self.after
        return params


def parse_job_filters(
    status: str | None,
    kind: str | None,
    created_after: str | None,
    created_before: str | None,
    page_size: str | None,
    page_token: str | None,
) -> JobFilters:
    if status is not None and status not in {s.value for s in JobStatus}:
        raise _bad(f"status must be one of {', '.join(s.value for s in JobStatus)}")
    if kind is not None and kind not in {k.value for k in JobKind}:
        raise _bad(f"kind must be one of {', '.join(k.value for k in JobKind)}")
    size = DEFAULT_PAGE_SIZE
    if page_size is not None:
        if not (page_size.isascii() and page_size.isdigit() and len(page_size) <= 3):
            size = 0
        else:
            size = int(page_size)
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise _bad(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return JobFilters(
        status=status,
        kind=kind,
        created_after=_moment(created_after, "created_after"),
        created_before=_moment(created_before, "created_before"),
        after=None if page_token is None else decode_page_token(page_token),
        page_size=size,
    )


def _moment(raw: str | None, name: str) -> datetime | None:
    """An ISO-8601 date-time as naive UTC, clamped to the calendar (it only bounds a filter)."""
    if raw is None:
        return None
    moment = iso_naive_utc(raw, clamp=True)
    if moment is None:
        raise _bad(f"{name} must be an ISO-8601 date-time such as 2024-01-31T09:00:00")
    return moment


#: A page token: the last job's created_at (microseconds since 1970) and id. Any string of
#: this form is a valid position, so a client cannot send a well-formed token we refuse.
PAGE_TOKEN_PATTERN = r"^[0-9]{1,17}\.[0-9a-f]{32}$"  # noqa: S105 (not a secret)
_EPOCH = datetime(1970, 1, 1)


def encode_page_token(created_at: datetime, job_id: uuid.UUID) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{job_id.hex}"


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    if not re.fullmatch(PAGE_TOKEN_PATTERN, token):
        raise _bad("page_token is not one this API gave out (use next_page_token)")
    micros, job_hex = token.split(".")
    return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=job_hex)

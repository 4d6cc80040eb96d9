"""Parsing and validation of todo input, with the course's messages and order of checks.

Written by hand rather than by a schema library so that the order of checks is the
contract's (extra fields first, then a missing title) and every message says what to fix.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from api.errors import ApiError
from models.todo import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH

#: The keys a client may send; anything else (including id and the server-set times) is
#: refused with "extra fields", as the course's API does.
WRITABLE_FIELDS = frozenset({"title", "description", "completed", "deadline_at"})

#: ``?window=N`` is a number of days either side of now; a century is plenty and keeps
#: ``now + N days`` far from datetime's limits.
MAX_WINDOW_DAYS = 36_500

#: Any decimal integer (as the OpenAPI's ``type: integer`` reads a query value: optional
#: sign, leading zeros, ASCII digits only) with at most 6 significant digits; only those
#: are converted (int() refuses strings of over 4,300 digits, leading zeros included).
_WINDOW_PATTERN = re.compile(r"(?P<sign>[+-]?)0*(?P<digits>[0-9]{1,6})")
_DATETIME_EXAMPLE = "2023-02-27T00:00:00"


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def json_object_body(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as a JSON object: a 415 if it is declared as another media type and is not
    JSON either, else a 400 saying what is wrong with it.

    A JSON text is read whatever its declared type (RFC 9110 section 8.3 lets the recipient
    examine the data), as it always has been: ``curl -d`` (form type) and ``fetch`` with a
    string body (text/plain) send JSON that way, and the course's clients get the same
    answers as ever. Only content that is not JSON at all is refused as a media type.
    """
    if content_type is not None and not _declared_json(content_type) and not _is_json(raw):
        raise ApiError(415, "request body must be JSON, sent with Content-Type: application/json")
    return decode_object(raw)


def _declared_json(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, any parameters (charset) allowed."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _is_json(raw: bytes) -> bool:
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False
    except RecursionError:
        return True  # JSON, only too deep: decode_object says so
    return True


def decode_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    if not raw.strip():
        raise _bad("request body must be a JSON object")
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise _bad("request body is not valid JSON") from None
    except RecursionError:
        raise _bad("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    return data


def parse_todo_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validate a create (POST) or partial update (PUT) body; returns column values."""
    if not data.keys() <= WRITABLE_FIELDS:
        raise _bad("extra fields")
    if creating and "title" not in data:
        raise _bad("missing title")
    values: dict[str, Any] = {}
    if "title" in data:
        values["title"] = _text(data["title"], "title", TITLE_MAX_LENGTH, multiline=False)
    if "description" in data and data["description"] is not None:
        values["description"] = _text(
            data["description"], "description", DESCRIPTION_MAX_LENGTH, multiline=True
        )
    elif "description" in data:
        values["description"] = None
    if "completed" in data:
        if not isinstance(data["completed"], bool):
            raise _bad("completed must be true or false")
        values["completed"] = data["completed"]
    if "deadline_at" in data:
        value = data["deadline_at"]
        values["deadline_at"] = None if value is None else parse_datetime(value, "deadline_at")
    return values


def _text(value: Any, name: str, max_length: int, *, multiline: bool) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    if len(value) > max_length:
        raise _bad(f"{name} must be at most {max_length} characters (got {len(value)})")
    if not value.isprintable():
        for char in value:
            if multiline and char in "\n\t":
                continue
            category = unicodedata.category(char)
            if category == "Cc":
                raise _bad(
                    f"{name} must not contain control characters"
                    + (" (line breaks and tabs are allowed)" if multiline else "")
                )
            if category == "Cs":
                raise _bad(f"{name} must be valid Unicode (it contains a lone surrogate)")
    return value


def parse_datetime(value: Any, name: str) -> datetime:
    """ISO-8601 date-time -> naive UTC. Offsets are converted; a value without one is UTC.

    Accepts the course web page's form too (``2024-04-19 14:00:00.000``).
    """
    moment = iso_naive_utc(value) if isinstance(value, str) else None
    if moment is None:
        raise _bad(f"{name} must be an ISO-8601 date-time such as {_DATETIME_EXAMPLE}, or null")
    return moment


def iso_naive_utc(text: str, *, clamp: bool = False) -> datetime | None:
    """An ISO-8601 date-time (at most 64 characters) as naive UTC; None if it is not one.
    Offsets are converted; without one it is UTC. One whose UTC falls outside the calendar
    (year 1 with a positive offset, 9999 with a negative one) is not one either, or with
    ``clamp`` the calendar's first or last moment (for filters, which it bounds the same).
    """
    if len(text) > 64:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        if not clamp:
            return None
        return datetime.min if moment.year == 1 else datetime.max


def parse_completed_filter(raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise _bad("completed must be true or false")
    return raw == "true"


def parse_window(raw: str | None) -> timedelta | None:
    if raw is None:
        return None
    match = _WINDOW_PATTERN.fullmatch(raw)
    days = int(match["sign"] + match["digits"]) if match else None
    if days is None or abs(days) > MAX_WINDOW_DAYS:
        raise _bad(
            f"window must be a whole number of days between -{MAX_WINDOW_DAYS} "
            f"and {MAX_WINDOW_DAYS}"
        )
    return timedelta(days=days)


# --- The list's paging ---------------------------------------------------------------------

#: ``?limit=N``: todos per page.
MAX_TODO_PAGE = 1000
#: A cursor: the last todo's created_at (microseconds since 1970) and id, as ``<micros>.<id>``.
#: Any string of this form is a valid position, so a well-formed cursor is never refused.
TODO_CURSOR_PATTERN = r"^[0-9]{1,17}\.[0-9]{1,10}$"
_EPOCH = datetime(1970, 1, 1)
_MAX_TODO_ID = 2**31 - 1


@dataclass(frozen=True)
class TodoPage:
    """One read of the todo list: its filters, where it starts and how many rows at most."""

    completed: bool | None = None
    due_by: datetime | None = None
    #: The (created_at, id) of the last todo already listed; the read starts after it.
    after: tuple[datetime, int] | None = None
    #: Rows to read; None: all of them.
    limit: int | None = None

    def params(self) -> dict[str, Any]:
        """The statement's parameters; their names pick the statement (api.queries.todo_list)."""
        params: dict[str, Any] = {}
        if self.completed is not None:
            params["completed"] = self.completed
        if self.due_by is not None:
            params["due_by"] = self.due_by
        if self.after is not None:
            params["after_created_at"], params["after_id"] = self.after
        if self.limit is not None:
            params["limit"] = self.limit
        return params


def parse_limit(raw: str | None) -> int | None:
    """``?limit=N``: a whole number from 1 to ``MAX_TODO_PAGE``; None when absent."""
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_TODO_PAGE:
        return int(raw)
    raise _bad(f"limit must be a whole number from 1 to {MAX_TODO_PAGE}")


def encode_cursor(created_at: datetime, todo_id: int) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{todo_id}"


def parse_cursor(raw: str | None) -> tuple[datetime, int] | None:
    """``?cursor=``: a position this API gave out in a ``Link`` header; None when absent."""
    if raw is None:
        return None
    if not re.fullmatch(TODO_CURSOR_PATTERN, raw):
        raise _bad("cursor is not one this API gave out (follow the Link header's next URL)")
    micros, todo_id = raw.split(".")
    # Ids are a Postgres integer: a larger one sorts after every todo of its instant, as
    # the largest id does (and would not fit the statement's parameter).
    return _EPOCH + timedelta(microseconds=int(micros)), min(int(todo_id), _MAX_TODO_ID)

"""``Idempotency-Key`` on the two creating POSTs: a retried request gets the first answer.

POST /api/v1/todos and POST /api/v1/todos/ical create something each time they run; a client
that lost the answer (a timeout, a dropped connection) cannot tell whether to try again. With
an ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header, as Stripe practises it)
it can: the first request with a key runs and its 2xx answer is kept; any later request
with the same key and the same request is answered with those bytes again (same status,
same body, so the same todo id or task_id, plus ``Idempotent-Replayed: true``) and runs
nothing.

- The key: 1 to 255 printable ASCII characters, as a token (``abc-123``) or as the draft's
  sf-string (``"abc 123"``: in double quotes, ``\\"`` and ``\\\\`` escaped); else 400.
- Keys are per operation ("POST /api/v1/todos"): the same key on the two routes is two keys.
- "The same request": the same operation, Content-Type and body, byte for byte (sha256 over
  them). The key with another request: 422, whether the first one finished or not.
- While the first request runs, the same request again: 409 with ``Retry-After: 1``.
- A 4xx/5xx answer is not kept: the key is free again, for a corrected or later retry.
- Keys are kept for IDEMPOTENCY_KEY_TTL_S (at least 24 hours), then forgotten: an
  expired key is a new key (the workers purge them, models.lifecycle).
- A claim older than ``LEASE_S`` is taken over by the next request with its key: the first
  request's process died (no request runs that long: DB_STATEMENT_TIMEOUT_MS, 30 s by
  default, and BROKER_SEND_TIMEOUT_S bound it; a statement timeout set above the lease would
  let a slow request's key be taken over while it runs). The
  consequence: if it died after its work committed but before its answer was stored, the
  retry does the work again (one duplicate, after a crash, at most once per key per lease).
- No header: nothing here happens beyond looking for it (these routes are benchmarked).
- A body over API_MAX_BODY_BYTES is passed through untouched, unclaimed, and Litestar answers
  413 as without a key; at most that many bytes are ever held in memory. The calendar route
  never reads its body, so Litestar would not refuse it and the request would run without its
  key: there the same 413 is answered here.

This is a plain ASGI layer in front of Litestar (``api.app.TaskOverflowApp._http_entry``), not
a Litestar middleware: those are built into every route's stack and would cost every request
two more layers. Acting on the raw ASGI messages also makes the kept bytes exactly the bytes
the client got. Its statements go through ``api.database.Database`` like every other
(asyncpg on Postgres, SQLAlchemy on SQLite in the zero-setup run; both know ON CONFLICT).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
import structlog
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Operation, Parameter, Schema
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send
from litestar.utils import normalize_path
from sqlalchemy import and_, bindparam, delete, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from api.database import Database, DatabaseUnavailable, Query
from api.errors import DATABASE_RETRY_AFTER_S, DATABASE_UNAVAILABLE
from api.openapi_docs import ErrorBody
from models.clock import utcnow
from models.idempotency import MAX_KEY_LENGTH, IdempotencyKey
from models.settings import Settings

log = structlog.get_logger("api")

HEADER = "Idempotency-Key"
_HEADER_NAME = HEADER.lower().encode()

#: Normalised request path (as Litestar routes it: no trailing or doubled slashes) -> the
#: scope its keys live in. Only POSTs to these are looked at.
SCOPES = {
    "/api/v1/todos": "POST /api/v1/todos",
    "/api/v1/todos/ical": "POST /api/v1/todos/ical",
}

#: Operations whose handler never reads the body: an oversized one would not be refused by
#: Litestar, and passed through it would run without its key. Refused here instead.
_BODY_UNREAD = frozenset({"POST /api/v1/todos/ical"})

#: A claim this old belongs to a request whose process died: the next request takes it over.
#: Far above anything one request can take (DB_STATEMENT_TIMEOUT_MS, BROKER_SEND_TIMEOUT_S).
LEASE_S = 60

#: Claim attempts before answering 409: a claim can vanish between our statements when the
#: request holding it fails (its key is freed), and then it is ours to take.
_CLAIM_ATTEMPTS = 3

# What we accept, exactly as documented (the OpenAPI pattern below is the union of both):
# a token of printable ASCII, or an sf-string (RFC 8941 section 3.3.3) of 1-255 characters.
_TOKEN = f"[\\x21-\\x7e]{{1,{MAX_KEY_LENGTH}}}"
_SF_STRING = f'"((?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]|\\\\["\\\\]){{1,{MAX_KEY_LENGTH}}})"'
_TOKEN_RE = re.compile(_TOKEN)
_SF_STRING_RE = re.compile(_SF_STRING)
_SF_ESCAPE = re.compile(r'\\(["\\])')
KEY_PATTERN = f"^(?:{_TOKEN}|{_SF_STRING})$"

BAD_KEY = (
    f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters: a token such as "
    "a UUID, or a string in double quotes"
)
SEVERAL_KEYS = f"send one {HEADER} header, not several"
IN_PROGRESS = (
    f"a request with this {HEADER} is still being processed; retry shortly "
    "(the same request will then get its answer)"
)


def other_request(operation: str) -> str:
    return (
        f"{HEADER} was used with a different request on {operation} (another body or "
        "Content-Type): send a new key for a new request"
    )


def parse_key(raw: bytes) -> str | None:
    """The key in a header value, or None if it is not one we accept.

    In double quotes it is an sf-string (quotes removed, escapes undone); otherwise the
    value as sent. Surrounding spaces and tabs are not part of a field value (RFC 9110).
    """
    text = raw.decode("latin-1").strip(" \t")
    quoted = _SF_STRING_RE.fullmatch(text)
    if quoted is not None:
        return _SF_ESCAPE.sub(r"\1", quoted.group(1))
    return text if _TOKEN_RE.fullmatch(text) else None


def fingerprint(operation: str, content_type: bytes, body: bytes) -> str:
    """sha256 of what makes two requests the same: operation, Content-Type, body (bytes)."""
    digest = hashlib.sha256()
    for part in (operation.encode(), content_type):
        # Length-prefixed, so no two different (operation, type, body) share an input.
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    digest.update(body)
    return digest.hexdigest()


# --- The statements (one per Database call) ------------------------------------------------

_K = IdempotencyKey
# Parameters are not named after columns: SQLAlchemy reserves those names in INSERT/UPDATE.
_THIS_KEY = and_(_K.scope == bindparam("op"), _K.key == bindparam("idem_key"))
#: Still ours: in progress, and claimed by us (created_at is the claim's time, our token).
_OUR_CLAIM = and_(_THIS_KEY, _K.status_code.is_(None), _K.created_at == bindparam("claimed_at"))

_insert = insert(_K).values(
    scope=bindparam("op"),
    key=bindparam("idem_key"),
    fingerprint=bindparam("request"),
    created_at=bindparam("now"),
    expires_at=bindparam("expires_at"),
)
#: Claim the key: a new row, or take over an expired key or a claim past its lease (the
#: WHERE is evaluated on the existing row; concurrent takeovers: the first wins, the others
#: see its fresh created_at and get no row). Returns a row only if the key is now ours.
CLAIM = Query(
    _insert.on_conflict_do_update(
        index_elements=[_K.scope, _K.key],
        set_={
            "fingerprint": _insert.excluded.fingerprint,
            "status_code": null(),
            "content_type": null(),
            "location": null(),
            "body": null(),
            "created_at": _insert.excluded.created_at,
            "expires_at": _insert.excluded.expires_at,
        },
        where=or_(
            _K.expires_at <= bindparam("now"),
            and_(_K.status_code.is_(None), _K.created_at <= bindparam("stale_before")),
        ),
    ).returning(_K.scope)
)

#: The key someone else holds: what to answer.
FIND = Query(
    select(
        _K.fingerprint, _K.status_code, _K.content_type, _K.location, _K.body, _K.expires_at
    ).where(_THIS_KEY)
)

#: The request succeeded: keep its answer (only if the claim is still ours).
COMPLETE = Query(
    update(_K)
    .where(_OUR_CLAIM)
    .values(
        status_code=bindparam("kept_status"),
        content_type=bindparam("kept_type"),
        location=bindparam("kept_location"),
        body=bindparam("kept_body"),
        expires_at=bindparam("kept_until"),
    )
    .returning(_K.scope)
)

#: The request failed (or never answered): free the key for a retry.
RELEASE = Query(delete(_K).where(_OUR_CLAIM))


# --- OpenAPI ---------------------------------------------------------------------------------

HEADER_DESCRIPTION = (
    "Optional. Makes retrying this request safe: the first request with a key runs and its "
    "2xx answer is kept for at least 24 hours; the same request again with the same key "
    "(same Content-Type and body, byte for byte) gets that answer again, unchanged, with "
    "`Idempotent-Replayed: true`, and creates nothing. The key with a different request: "
    "422. While the first request still runs: 409 with Retry-After. An error answer is not "
    "kept (fix the request and retry with the same key). 1-255 printable ASCII characters, "
    'as a token (e.g. a UUID) or a quoted string ("..."). Keys are per operation.'
)


def idempotent_operation(base: type[Operation] = Operation) -> type[Operation]:
    """``base`` with the optional ``Idempotency-Key`` header parameter documented (an
    ``operation_class``: documentation only, so nothing is parsed per request)."""

    @dataclass
    class IdempotentOperation(base):  # type: ignore[valid-type,misc]
        def __post_init__(self) -> None:
            if hasattr(base, "__post_init__"):
                base.__post_init__(self)  # type: ignore[attr-defined]
            parameter = Parameter(
                name=HEADER,
                param_in="header",
                required=False,
                description=HEADER_DESCRIPTION,
                schema=Schema(type=OpenAPIType.STRING, pattern=KEY_PATTERN),
            )
            operation = cast(Operation, self)
            operation.parameters = [*(operation.parameters or []), parameter]

    return IdempotentOperation


#: The answers only a request with a key can get (400 for a bad key is the routes' 400).
IDEMPOTENCY_RESPONSES = {
    409: ResponseSpec(
        data_container=ErrorBody,
        description=f"A request with this {HEADER} is still being processed; retry after "
        "Retry-After seconds",
        generate_examples=False,
    ),
    422: ResponseSpec(
        data_container=ErrorBody,
        description=f"This {HEADER} was used with a different request",
        generate_examples=False,
    ),
}


# --- The ASGI layer --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kept:
    """A stored answer to replay."""

    status: int
    content_type: str | None
    location: str | None
    body: bytes


@dataclass(frozen=True)
class _Refused:
    """An answer of ours: status, message, extra headers."""

    status: int
    message: str
    headers: Sequence[tuple[bytes, bytes]] = ()


def _header_values(scope: HTTPScope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key == name]


async def _answer(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse(send: Send, refused: _Refused) -> None:
    # The shape of every error of the API (api.errors).
    body = msgspec.json.encode({"error": refused.message})
    await _answer(
        send, refused.status, body, [(b"content-type", b"application/json"), *refused.headers]
    )


async def _replay(send: Send, kept: _Kept) -> None:
    headers = [(b"idempotent-replayed", b"true")]
    if kept.content_type is not None:
        headers.append((b"content-type", kept.content_type.encode("latin-1")))
    if kept.location is not None:
        headers.append((b"location", kept.location.encode("latin-1")))
    await _answer(send, kept.status, kept.body, headers)


_DATABASE_UNAVAILABLE = _Refused(
    503, DATABASE_UNAVAILABLE, [(b"retry-after", DATABASE_RETRY_AFTER_S.encode())]
)


class IdempotencyKeys:
    """Claims, keeps and replays keys in the ``idempotency_keys`` table."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.ttl = timedelta(seconds=settings.jobs.idempotency_key_ttl_s)
        self.max_body_bytes = settings.api.max_body_bytes

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with keyed POSTs to the two creating routes handled here."""

        async def entry(scope: Scope, receive: Receive, send: Send) -> None:
            # The cheap tests first: every other request pays a comparison and a lookup.
            if scope["type"] == "http" and cast("HTTPScope", scope)["method"] == "POST":
                http = cast("HTTPScope", scope)
                keys = _header_values(http, _HEADER_NAME)
                if keys:
                    operation = SCOPES.get(normalize_path(http["path"]))
                    if operation is not None:
                        await self._keyed(http, receive, send, app, operation, keys)
                        return
            await app(scope, receive, send)

        return entry

    async def _keyed(
        self,
        scope: HTTPScope,
        receive: Receive,
        send: Send,
        app: ASGIApp,
        operation: str,
        raw_keys: list[bytes],
    ) -> None:
        if len(raw_keys) > 1:
            await _refuse(send, _Refused(400, SEVERAL_KEYS))
            return
        key = parse_key(raw_keys[0])
        if key is None:
            await _refuse(send, _Refused(400, BAD_KEY))
            return
        body, rest = await self._read_body(scope, receive)
        if body is None:
            if operation in _BODY_UNREAD:
                too_large = RequestEntityTooLarge()  # Litestar's own words
                await _refuse(send, _Refused(too_large.status_code, too_large.detail))
            else:
                # Over the limit: Litestar refuses it (413) exactly as without a key.
                await app(scope, rest, send)
            return
        content_type = b", ".join(_header_values(scope, b"content-type"))
        request = fingerprint(operation, content_type, body)
        try:
            outcome = await self._claim(operation, key, request)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable", error=str(exc))
            outcome = _DATABASE_UNAVAILABLE
        if isinstance(outcome, _Refused):
            await _refuse(send, outcome)
        elif isinstance(outcome, _Kept):
            await _replay(send, outcome)
        else:
            await self._run(scope, send, app, operation, key, outcome, body, receive)

    async def _read_body(self, scope: HTTPScope, receive: Receive) -> tuple[bytes | None, Receive]:
        """The whole body, if it is within the limit; else None and a ``receive`` that gives
        the app every message as the client sent it (the ones read here first)."""
        read: list[ReceiveMessage] = []
        size = 0
        too_big = False
        for value in _header_values(scope, b"content-length"):
            # A malformed value is Litestar's to refuse (400), as without a key.
            if not value.isdigit() or int(value) > self.max_body_bytes:
                too_big = True
        while not too_big:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":  # the client went away
                too_big = True
                break
            size += len(cast("bytes", message.get("body", b"")))
            if size > self.max_body_bytes:
                too_big = True
            elif not message.get("more_body", False):
                return b"".join(cast("bytes", m.get("body", b"")) for m in read), receive
        pending = iter(read)

        async def replaying() -> ReceiveMessage:
            return next(pending, None) or await receive()

        return None, replaying

    async def _claim(self, operation: str, key: str, request: str) -> datetime | _Kept | _Refused:
        """Our claim's time if the key is now ours, else what to answer."""
        for _ in range(_CLAIM_ATTEMPTS):
            now = utcnow()
            claimed = await self.db.execute(
                CLAIM,
                op=operation,
                idem_key=key,
                request=request,
                now=now,
                expires_at=now + self.ttl,
                stale_before=now - timedelta(seconds=LEASE_S),
            )
            if claimed is not None:
                return now
            row = await self.db.fetch_one(FIND, op=operation, idem_key=key)
            if row is None:
                continue  # its request failed and freed it just now: try to claim it again
            stored, status, content_type, location, body, expires_at = row
            if expires_at <= now:
                continue  # expired between our two statements: a new key now
            if stored != request:
                return _Refused(422, other_request(operation))
            if status is None:
                return _Refused(409, IN_PROGRESS, [(b"retry-after", b"1")])
            return _Kept(status, content_type, location, bytes(body or b""))
        return _Refused(409, IN_PROGRESS, [(b"retry-after", b"1")])

    async def _run(
        self,
        scope: HTTPScope,
        send: Send,
        app: ASGIApp,
        operation: str,
        key: str,
        claimed_at: datetime,
        body: bytes,
        receive: Receive,
    ) -> None:
        """Run the request on the claimed key; keep a 2xx answer, free the key otherwise.

        The answer is held until it is complete and kept (small JSON bodies): a retry that
        follows the answer always finds it stored, never "still being processed".
        """
        this = {"op": operation, "idem_key": key, "claimed_at": claimed_at}
        held: list[Message] = []
        settled = False
        body_sent = False

        async def receive_body() -> ReceiveMessage:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only a disconnect can follow

        async def hold(message: Message) -> None:
            nonlocal settled
            held.append(message)
            if message["type"] != "http.response.body" or message.get("more_body", False):
                return
            settled = True
            await self._settle(this, held)
            for answer in held:
                await send(answer)

        try:
            await app(scope, receive_body, hold)
        finally:
            if not settled:  # no complete answer (an exception, a cancellation): free the key
                await self._release(this)

    async def _settle(self, this: dict[str, Any], held: list[Message]) -> None:
        start: dict[str, Any] = dict(held[0])  # http.response.start, as ASGI requires
        status = int(start["status"])
        if not 200 <= status < 300:
            await self._release(this)
            return
        headers = {bytes(name).lower(): bytes(value) for name, value in start.get("headers", [])}
        location = headers.get(b"location")
        try:
            kept = await self.db.execute(
                COMPLETE,
                **this,
                kept_status=status,
                kept_type=headers[b"content-type"].decode("latin-1")
                if b"content-type" in headers
                else None,
                kept_location=None if location is None else location.decode("latin-1"),
                kept_body=b"".join(cast("bytes", m.get("body", b"")) for m in held[1:]),
                kept_until=utcnow() + self.ttl,
            )
        except DatabaseUnavailable as exc:
            # The work is done: answer it. A retry gets 409 until the lease runs out, then
            # runs again (the documented consequence of a lost claim).
            log.warning("idempotency key not stored", scope=this["op"], error=str(exc))
            return
        if kept is None:
            log.warning("idempotency claim lost before its answer was stored", scope=this["op"])

    async def _release(self, this: dict[str, Any]) -> None:
        try:
            await self.db.execute(RELEASE, **this)
        except Exception as exc:  # best effort: the lease frees it anyway
            log.warning("idempotency key not released", scope=this["op"], error=repr(exc))

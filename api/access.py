"""The door every request passes before routing: who the client is, whether it needs and
has an API key, and whether its rate limit lets it in.

1. The client's address, from X-Forwarded-For only through a trusted proxy
   (api.client_address); its identity for limits is ``ip:<address>``, or ``key:<name>``
   when it presented an accepted API key.
2. API keys (api.keys), when configured: writes and job endpoints answer 401 without a
   valid ``Authorization: Bearer <key>``; a key that is presented must be valid anywhere.
3. Rate limits (api.rate_limits): 429 with Retry-After past the client's budget; every
   counted response carries the RateLimit headers.

Health checks, readiness and metrics are never asked for a key nor counted: the load
balancer and the scraper must always get through. Refusals are answered here, before
Litestar, so a flood of them costs as little as possible. Handlers read the identity with
``client_of`` (the job quotas are per client).
"""

from __future__ import annotations

import json
from typing import cast

from litestar import Request
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Message,
    Receive,
    Scope,
    Send,
)
from litestar.utils import normalize_path

from api.client_address import Networks, client_key, resolve_client
from api.keys import ApiKeys
from api.rate_limits import READ_METHODS, RateLimiter

#: Where the identity is left for handlers (the request's state).
CLIENT = "taskoverflow_client"

#: Never asked for a key, never counted.
EXEMPT_PATHS = frozenset({"/api/v1/health", "/api/v1/health/ready", "/metrics"})

#: Under these, every method needs a key (when keys are on): the job endpoints.
JOB_PREFIXES = ("/api/v1/jobs", "/api/v1/todos/ical")

#: What a page of another origin may read of an answer (CORS_ALLOW_ORIGINS).
EXPOSED_HEADERS = (
    "Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "WWW-Authenticate",
    "X-Request-Id",
)
_EXPOSED = ", ".join(EXPOSED_HEADERS).encode()


def needs_key(method: str, path: str) -> bool:
    """With keys on: every write to the API, and every job endpoint (``path`` normalised:
    no doubled or trailing slashes, as routing sees it)."""
    if not path.startswith("/api/"):
        return False  # the page, its static files, the OpenAPI document
    return method not in READ_METHODS or path.startswith(JOB_PREFIXES)


def client_of(request: Request) -> str:
    """The identity the door gave the request (``ip:...`` or ``key:...``)."""
    return cast(str, request.scope.get("state", {}).get(CLIENT, "ip:unknown"))


def _bearer(scope: HTTPScope) -> str | None:
    """The Bearer token; "" for another scheme or an empty one (not a usable key)."""
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _refuse(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"error": message}).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)


_KEY_MISSING = (
    "API key required: send Authorization: Bearer <key> (writes and job endpoints need one)"
)
_KEY_INVALID = "invalid API key: it is not one of the keys this service accepts"
_KEYS_UNLOADED = "API keys not loaded yet: try again shortly"


def _header(scope: HTTPScope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def access_layer(
    app: ASGIApp,
    *,
    proxies: Networks,
    keys: ApiKeys | None,
    limiter: RateLimiter | None,
    cors_origins: tuple[str, ...] = (),
) -> ASGIApp:
    allowed_origins = {origin.encode() for origin in cors_origins}

    async def door(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        http = cast("HTTPScope", scope)
        address = resolve_client(http, proxies)
        # The path as routing will see it ("/api/v1//jobs" routes to /api/v1/jobs): decide
        # on that, or a doubled slash would walk past the key check.
        path, method = normalize_path(http["path"]), http["method"]
        preflight = method == "OPTIONS" and _header(http, b"access-control-request-method")
        if path in EXEMPT_PATHS or preflight:
            # A CORS preflight never carries credentials: CORS (inside) answers it.
            await app(scope, receive, send)
            return
        origin = _header(http, b"origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin is not None and origin in allowed_origins:
            # Refusals are answered here, outside Litestar's CORS: a page of an allowed
            # origin must still be able to read why (and Retry-After).
            cors = [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", _EXPOSED),
                (b"vary", b"Origin"),
            ]
        client = client_key(address)
        if keys is not None:
            token = _bearer(http)
            if token is not None or needs_key(method, path):
                if not keys.loaded:
                    await _refuse(send, 503, _KEYS_UNLOADED, [(b"retry-after", b"2"), *cors])
                    return
                name = keys.name_of(token) if token else None
                if name is None:
                    challenge = b'Bearer realm="taskoverflow"'
                    if token is not None:
                        challenge += b', error="invalid_token"'
                    message = _KEY_MISSING if token is None else _KEY_INVALID
                    await _refuse(send, 401, message, [(b"www-authenticate", challenge), *cors])
                    return
                client = f"key:{name}"
        scope.setdefault("state", {})[CLIENT] = client  # type: ignore[typeddict-unknown-key]
        decision = None if limiter is None else await limiter.check(client, method)
        if decision is None:
            await app(scope, receive, send)
            return
        if not decision.allowed:
            budget = "read" if method in READ_METHODS else "write"
            await _refuse(
                send,
                429,
                f"rate limit exceeded: more than {decision.limit} {budget} requests a minute "
                f"from this client; retry after {decision.retry_after_s} s",
                [*decision.headers(), *cors],
            )
            return
        fields = decision.headers()

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *fields]
            await send(message)

        await app(scope, receive, send_with_limits)

    return door

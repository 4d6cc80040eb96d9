"""Every error leaves the API as ``{"error": "<message>"}`` with a 4xx or 503 status.

The course's clients read ``error``; Litestar's own shape (status_code/detail/extra) is
translated here so validation, routing and size-limit errors look the same as ours.
"""

from __future__ import annotations

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE

from api.database import DatabaseUnavailable
from api.http_methods import allow_header

log = structlog.get_logger("api")


#: The answer to a request the database could not serve (503, with this Retry-After).
DATABASE_UNAVAILABLE = "database unavailable, try again shortly"
DATABASE_RETRY_AFTER_S = "5"


class ApiError(Exception):
    """An error we answer on purpose: status code, message, optional headers."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers or {}


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response[dict[str, str]]:
    return Response(
        {"error": message}, status_code=status_code, media_type=MediaType.JSON, headers=headers
    )


def _api_error(_: Request, exc: ApiError) -> Response[dict[str, str]]:
    return error_response(exc.status_code, exc.message, exc.headers)


def _http_exception(_: Request, exc: HTTPException) -> Response[dict[str, str]]:
    if exc.status_code >= 500:
        return _unhandled(_, exc)
    message = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict) and first.get("key"):
            message = f"{first['key']}: {first.get('message', 'invalid value')}"
    headers = exc.headers
    if isinstance(exc, MethodNotAllowedException) and headers and "allow" in headers:
        # Routing lists the methods it has handlers for; HEAD is answered wherever GET is.
        headers = {**headers, "allow": allow_header(headers["allow"].split(","))}
    return error_response(exc.status_code, message, headers)


def _database_unavailable(_: Request, exc: DatabaseUnavailable) -> Response[dict[str, str]]:
    # Connection failures and pool exhaustion are the database being unavailable, not a bug
    # of ours (api.database decides which errors are): say so, and let clients retry.
    log.warning("database unavailable", error=str(exc))
    return error_response(
        HTTP_503_SERVICE_UNAVAILABLE,
        DATABASE_UNAVAILABLE,
        {"Retry-After": DATABASE_RETRY_AFTER_S},
    )


def _unhandled(request: Request, exc: Exception) -> Response[dict[str, str]]:
    log.error("unhandled error", method=request.method, path=request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_exception,
    DatabaseUnavailable: _database_unavailable,
    Exception: _unhandled,
}

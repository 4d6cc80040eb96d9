"""What the generated OpenAPI cannot infer: every error we answer, the todo body, and the
links and examples of the job operations.

The write handlers read their raw body (api.todo_input keeps the course's order of checks
and messages), so Litestar sees no body type; ``TodoBodyOperation`` documents it. Every
status code a route can answer is listed, so schema-driven clients and fuzzers
(schemathesis, tests/chaos) can hold us to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.params import QueryParameter

from models.todo import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH


class ErrorBody(msgspec.Struct):
    """Every 4xx/5xx body: what went wrong, in words."""

    error: str


def query_param(description: str, type_: OpenAPIType = OpenAPIType.STRING, **schema: Any) -> Any:
    """A query parameter taken as text (``str | None``) and parsed by the route, documented
    as exactly what it accepts (``type_``, bounds, enum): the route's 400 messages are ours,
    not the framework's."""
    return QueryParameter(
        description=description, schema_extra={"one_of": None, "type": type_, **schema}
    )


def errors(*codes: int) -> dict[int, ResponseSpec]:
    descriptions = {
        400: "Bad input: the message says which field and why",
        401: "API keys are on and the request has no valid Authorization: Bearer key",
        404: "Not found",
        409: "Conflict with the resource's state: the message says which state and why",
        410: "Gone: the result has expired (finished jobs' results are kept JOB_RESULT_TTL_S)",
        413: "Request body too large",
        415: "The body is declared as something other than JSON (Content-Type)",
        422: "Well-formed but refused: the message says why",
        429: "Too many requests or unfinished jobs from this client: the message says which "
        "limit; retry after Retry-After seconds",
        503: "The database or the job queue is unreachable, or the job backlog is full; retry "
        "shortly (Retry-After)",
    }
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=descriptions[code], generate_examples=False
        )
        for code in codes
    }


# No control characters in text (the API refuses them; newlines/tabs only in descriptions).
_TITLE_CHARS = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_DESCRIPTION_CHARS = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"


def todo_body_schema(*, require_title: bool) -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        additional_properties=False,
        required=["title"] if require_title else None,
        properties={
            "title": Schema(
                type=OpenAPIType.STRING, max_length=TITLE_MAX_LENGTH, pattern=_TITLE_CHARS
            ),
            "description": Schema(
                one_of=[
                    Schema(
                        type=OpenAPIType.STRING,
                        max_length=DESCRIPTION_MAX_LENGTH,
                        pattern=_DESCRIPTION_CHARS,
                    ),
                    Schema(type=OpenAPIType.NULL),
                ]
            ),
            "completed": Schema(type=OpenAPIType.BOOLEAN),
            "deadline_at": Schema(
                one_of=[
                    Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.DATE_TIME,
                        description="ISO-8601; without an offset it means UTC",
                    ),
                    Schema(type=OpenAPIType.NULL),
                ]
            ),
        },
    )


def _with_todo_body(*, require_title: bool) -> type[Operation]:
    @dataclass
    class TodoBodyOperation(Operation):
        def __post_init__(self) -> None:
            schema = todo_body_schema(require_title=require_title)
            self.request_body = RequestBody(
                required=True, content={"application/json": OpenAPIMediaType(schema=schema)}
            )

    return TodoBodyOperation


#: POST /todos: the body, title required.
CreateTodoOperation = _with_todo_body(require_title=True)
#: PUT /todos/{id}: the body, every key optional (a partial update).
UpdateTodoOperation = _with_todo_body(require_title=False)


@dataclass
class DeleteTodoOperation(Operation):
    """200 is the deleted todo, or ``{}`` (exactly: no properties) when there was none."""

    def __post_init__(self) -> None:
        ok = self.responses.get("200") if self.responses else None
        media = ok.content.get("application/json") if ok is not None and ok.content else None  # type: ignore[union-attr]
        if media is not None:
            media.schema = Schema(
                one_of=[
                    Reference(ref="#/components/schemas/TodoOut"),
                    Schema(type=OpenAPIType.OBJECT, max_properties=0),
                ]
            )


#: Per status code: link name -> (target operationId, {target parameter: runtime expression}).
Links = dict[str, dict[str, tuple[str, dict[str, str]]]]


def with_links_and_examples(
    links: Links, examples: dict[str, Any] | None = None
) -> type[Operation]:
    """An operation class adding OpenAPI ``links`` and JSON response ``examples`` (both per
    status code) to what Litestar generates, which has neither.

    The links say how one answer leads to the next request (a submitted job's id to reading,
    cancelling and retrying it): clients can follow them, and schemathesis' stateful phase
    walks them (create, read, cancel, retry) with real ids instead of random ones.
    """

    @dataclass
    class LinkedOperation(Operation):
        def __post_init__(self) -> None:
            for code, named in links.items():
                response = self._response(code)
                response.links = {
                    name: Link(operation_id=operation_id, parameters=dict(parameters))
                    for name, (operation_id, parameters) in named.items()
                }
            for code, value in (examples or {}).items():
                content = self._response(code).content or {}
                media = content.get("application/json")
                if isinstance(media, OpenAPIMediaType):
                    media.examples = {"example": Example(value=value)}

        def _response(self, code: str) -> OpenAPIResponse:
            response = (self.responses or {}).get(code)
            if not isinstance(response, OpenAPIResponse):
                raise LookupError(f"{self.operation_id}: no {code} response to annotate")
            return response

    return LinkedOperation

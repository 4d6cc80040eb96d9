"""/api/v1/todos: list, read, create, update, delete (docs/API.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast
from urllib.parse import parse_qsl, urlencode

import msgspec
from litestar import Controller, MediaType, Request, Response, delete, get, post, put
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from api import queries
from api.admission import todos_full
from api.database import Database, Row
from api.errors import ApiError
from api.idempotency import IDEMPOTENCY_RESPONSES, idempotent_operation
from api.openapi_docs import (
    CreateTodoOperation,
    DeleteTodoOperation,
    UpdateTodoOperation,
    errors,
)
from api.schemas import TodoOut
from api.todo_input import (
    MAX_TODO_PAGE,
    MAX_WINDOW_DAYS,
    TODO_CURSOR_PATTERN,
    TodoPage,
    encode_cursor,
    json_object_body,
    parse_completed_filter,
    parse_cursor,
    parse_limit,
    parse_todo_fields,
    parse_window,
)
from models.clock import utcnow
from models.settings import LimitSettings

MAX_ID = 2**31 - 1

_BODY_DOC = (
    "Body: JSON, best sent as application/json (a JSON text declared as another media type, "
    "or with none, is read all the same; content that is not JSON and is declared as "
    "something else is refused with 415). "
    'A JSON object with any of "title" (string, required on create, <= 80 chars), '
    '"description" (string or null, <= 120), "completed" (boolean), '
    '"deadline_at" (ISO-8601 date-time or null; without an offset it means UTC). '
    'Any other key is refused with 400 "extra fields".'
)


def _not_found() -> ApiError:
    return ApiError(404, "Todo not found")


def _valid_id(todo_id: int) -> bool:
    # ids are a Postgres ``integer``: anything outside cannot exist, so it is simply not found.
    return 1 <= todo_id <= MAX_ID


#: The unpaged list is read this many todos a statement: memory holds one batch, not the list.
STREAM_BATCH = 1000

_ENCODER = msgspec.json.Encoder()


async def _read(db: Database, page: TodoPage) -> list[Row]:
    params = page.params()
    return await db.fetch_all(queries.todo_list(frozenset(params)), **params)


def _next_url(request: Request, last: Row) -> str:
    """This request's path and query with the cursor after ``last`` (a relative reference,
    which RFC 8288 resolves against the request's own URL: right behind any proxy)."""
    # The client's own query string, in its order, the cursor replaced.
    given = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
    query = [(name, value) for name, value in given if name != "cursor"]
    query.append(("cursor", encode_cursor(last[5], last[0])))
    return f"{request.url.path}?{urlencode(query)}"


def _streamed(db: Database, first: list[Row], page: TodoPage) -> Response[list[TodoOut]]:
    """Every todo from ``first`` (``page``'s first batch) on, as one JSON array written a
    batch at a time; each next batch is ``page`` read by keyset after the last one sent.
    Todos created meanwhile sort before the first batch and are not listed; one deleted
    before its batch is read is not either."""

    async def body() -> AsyncIterator[bytes]:
        rows, opening = first, b"["
        while rows:
            encoded = _ENCODER.encode([TodoOut(*row) for row in rows])
            yield opening + encoded[1:-1]  # the batch's items, without its own brackets
            opening = b","
            if len(rows) < STREAM_BATCH:
                break
            last = rows[-1]
            rows = await _read(db, dataclasses.replace(page, after=(last[5], last[0])))
        yield b"[]" if opening == b"[" else b"]"

    # The same JSON array the annotation documents, only written as it is read.
    return cast(Response[list[TodoOut]], Stream(body(), media_type=MediaType.JSON))


# Handlers are async and each runs one statement (api.database): no thread hop, one round trip.
class TodoController(Controller):
    path = "/api/v1/todos"
    tags = ("todos",)

    @get(
        summary="List todos, newest first",
        description=(
            "Every todo by default (written as it is read, a batch at a time). With "
            f"`limit=N` (1 to {MAX_TODO_PAGE}) a page of at most N; when more remain, a "
            '`Link: <URL>; rel="next"` header gives the next page\'s URL (the same query '
            "with a `cursor`). Todos created during a walk sort before its first page and "
            "are not listed; none is listed twice."
        ),
        responses=errors(400, 503),
        response_headers=[
            ResponseHeader(
                name="Link",
                description='With limit, when more todos remain: `<URL>; rel="next"`',
                required=False,
                documentation_only=True,
            )
        ],
    )
    async def list_todos(
        self,
        request: Request,
        db: NamedDependency[Database],
        # Each documented as exactly what it accepts, not enforced by Litestar: the parsers
        # answer anything else with our own 400 message. (Absent is what None stands for;
        # a query string has no null, so the documented schema has none either.)
        completed: Annotated[
            str | None,
            QueryParameter(
                description="true or false: only todos with it",
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.STRING,
                    "enum": ["true", "false"],
                },
            ),
        ] = None,
        window: Annotated[
            str | None,
            QueryParameter(
                description="N: only todos due by now + N days (overdue included, undated not)",
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.INTEGER,
                    "minimum": -MAX_WINDOW_DAYS,
                    "maximum": MAX_WINDOW_DAYS,
                },
            ),
        ] = None,
        limit: Annotated[
            str | None,
            QueryParameter(
                description=f"N: a page of at most N todos (1 to {MAX_TODO_PAGE})",
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.INTEGER,
                    "minimum": 1,
                    "maximum": MAX_TODO_PAGE,
                },
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                description='where the next page starts: take it from the Link rel="next" URL',
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.STRING,
                    "pattern": TODO_CURSOR_PATTERN,
                },
            ),
        ] = None,
    ) -> Response[list[TodoOut]]:
        only_completed = parse_completed_filter(completed)
        horizon = parse_window(window)
        size = parse_limit(limit)
        page = TodoPage(
            completed=only_completed,
            due_by=None if horizon is None else utcnow() + horizon,
            after=parse_cursor(cursor),
        )
        if size is None:
            # Read before answering: a database that cannot be reached is a 503, not a
            # stream broken off after its 200.
            batched = dataclasses.replace(page, limit=STREAM_BATCH)
            first = await _read(db, batched)
            if len(first) < STREAM_BATCH:  # the whole list: answered at once, with its length
                return Response([TodoOut(*row) for row in first])
            return _streamed(db, first, batched)
        # One row more than the page: whether there is a next page, without a count.
        rows = await _read(db, dataclasses.replace(page, limit=size + 1))
        headers = {}
        if len(rows) > size:
            rows = rows[:size]
            headers["Link"] = f'<{_next_url(request, rows[-1])}>; rel="next"'
        return Response([TodoOut(*row) for row in rows], headers=headers)

    @get("/{todo_id:int}", summary="Read one todo", responses=errors(404, 503))
    async def get_todo(self, todo_id: FromPath[int], db: NamedDependency[Database]) -> TodoOut:
        row = await db.fetch_one(queries.TODO_BY_ID, id=todo_id) if _valid_id(todo_id) else None
        if row is None:
            raise _not_found()
        return TodoOut(*row)

    # Writes read the raw body themselves (the course's order of checks and messages, see
    # api.todo_input).
    @post(
        summary="Create a todo",
        status_code=201,
        description=_BODY_DOC,
        # Idempotency-Key is handled in front of Litestar (api.idempotency): documented only.
        operation_class=idempotent_operation(CreateTodoOperation),
        responses={**errors(400, 409, 413, 415, 503), **IDEMPOTENCY_RESPONSES},
    )
    async def create_todo(
        self,
        request: Request,
        db: NamedDependency[Database],
        limits: NamedDependency[LimitSettings],
    ) -> TodoOut:
        body = json_object_body(await request.body(), request.headers.get("content-type"))
        values = parse_todo_fields(body, creating=True)
        row = await db.execute(
            queries.INSERT_TODO, **values, now=utcnow(), todos_max=limits.todos_max
        )
        if row is None:  # no room: TODOS_MAX todos already
            raise todos_full(limits)
        return TodoOut(*row)

    @put(
        "/{todo_id:int}",
        summary="Update some fields of a todo",
        description=_BODY_DOC,
        operation_class=UpdateTodoOperation,
        responses=errors(400, 404, 413, 415, 503),
    )
    async def update_todo(
        self, request: Request, todo_id: FromPath[int], db: NamedDependency[Database]
    ) -> TodoOut:
        # Validate before looking the todo up: a bad body never changes anything.
        body = json_object_body(await request.body(), request.headers.get("content-type"))
        values = parse_todo_fields(body, creating=False)
        if not _valid_id(todo_id):
            raise _not_found()
        if values:
            query = queries.update_todo(frozenset(values))
            row = await db.execute(query, **values, id=todo_id, now=utcnow())
        else:
            # Nothing to change: answer with the todo as it is (updated_at untouched).
            row = await db.fetch_one(queries.TODO_BY_ID, id=todo_id)
        if row is None:
            raise _not_found()
        return TodoOut(*row)

    @delete(
        "/{todo_id:int}",
        status_code=200,
        summary="Delete a todo (200 with {} if it did not exist)",
        operation_class=DeleteTodoOperation,
        responses=errors(404, 503),
    )
    async def delete_todo(
        self, todo_id: FromPath[int], db: NamedDependency[Database]
    ) -> TodoOut | dict[str, Any]:
        if not _valid_id(todo_id):
            return {}
        row = await db.execute(queries.DELETE_TODO, id=todo_id)
        return {} if row is None else TodoOut(*row)

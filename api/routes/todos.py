"""/api/v1/todos: list, read, create, update, delete (docs/API.md)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath, QueryParameter

from api import queries
from api.admission import todos_full
from api.database import Database
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
    MAX_WINDOW_DAYS,
    json_object_body,
    parse_completed_filter,
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


# Handlers are async and each runs one statement (api.database): no thread hop, one round trip.
class TodoController(Controller):
    path = "/api/v1/todos"
    tags = ("todos",)

    @get(summary="List todos, newest first", responses=errors(400, 503))
    async def list_todos(
        self,
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
    ) -> list[TodoOut]:
        only_completed = parse_completed_filter(completed)
        horizon = parse_window(window)
        params: dict[str, Any] = {}
        if only_completed is not None:
            params["completed"] = only_completed
        if horizon is not None:
            params["due_by"] = utcnow() + horizon
        rows = await db.fetch_all(queries.todo_list(frozenset(params)), **params)
        return [TodoOut(*row) for row in rows]

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

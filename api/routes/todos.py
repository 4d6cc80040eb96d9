"""/api/v1/todos: list, read, create, update, delete (API_CONTRACT.md §2)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post, put
from litestar.concurrency import sync_to_thread
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.openapi_docs import (
    CreateTodoOperation,
    DeleteTodoOperation,
    UpdateTodoOperation,
    errors,
)
from api.schemas import TodoOut
from api.todo_input import (
    decode_object,
    parse_completed_filter,
    parse_todo_fields,
    parse_window,
)
from models import Todo
from models.clock import utcnow

#: ids are a Postgres ``integer``: anything outside cannot exist, so it is simply not found.
MAX_ID = 2**31 - 1

_BODY_DOC = (
    'Body: a JSON object with any of "title" (string, required on create, <= 80 chars), '
    '"description" (string or null, <= 120), "completed" (boolean), '
    '"deadline_at" (ISO-8601 date-time or null; without an offset it means UTC). '
    'Any other key is refused with 400 "extra fields".'
)


def _find(session: Session, todo_id: int) -> Todo | None:
    if not 1 <= todo_id <= MAX_ID:
        return None
    return session.get(Todo, todo_id)


def _not_found() -> ApiError:
    return ApiError(404, "Todo not found")


class TodoController(Controller):
    path = "/api/v1/todos"
    tags = ("todos",)

    @get(sync_to_thread=True, summary="List todos, newest first", responses=errors(400, 503))
    def list_todos(
        self,
        state: State,
        completed: Annotated[
            str | None, QueryParameter(description="true or false: only todos with it")
        ] = None,
        window: Annotated[
            str | None,
            QueryParameter(
                description="N: only todos due by now + N days (overdue included, undated not)"
            ),
        ] = None,
    ) -> list[TodoOut]:
        only_completed = parse_completed_filter(completed)
        horizon = parse_window(window)
        stmt = select(Todo).order_by(Todo.created_at.desc(), Todo.id.desc())
        if only_completed is not None:
            stmt = stmt.where(Todo.completed.is_(only_completed))
        if horizon is not None:
            stmt = stmt.where(Todo.deadline_at <= utcnow() + horizon)
        with state.resources.session() as session:
            return [TodoOut.of(todo) for todo in session.scalars(stmt)]

    @get("/{todo_id:int}", sync_to_thread=True, summary="Read one todo", responses=errors(404, 503))
    def get_todo(self, state: State, todo_id: FromPath[int]) -> TodoOut:
        with state.resources.session() as session:
            todo = _find(session, todo_id)
            if todo is None:
                raise _not_found()
            return TodoOut.of(todo)

    # Writes read the raw body themselves (the course's order of checks and messages, see
    # api.todo_input), then do the database work in the thread pool.
    @post(
        summary="Create a todo",
        status_code=201,
        description=_BODY_DOC,
        operation_class=CreateTodoOperation,
        responses=errors(400, 413, 503),
    )
    async def create_todo(self, state: State, request: Request) -> TodoOut:
        values = parse_todo_fields(decode_object(await request.body()), creating=True)

        def insert() -> TodoOut:
            with state.resources.session() as session:
                todo = Todo(**values)
                session.add(todo)
                session.commit()
                return TodoOut.of(todo)

        return await sync_to_thread(insert)

    @put(
        "/{todo_id:int}",
        summary="Update some fields of a todo",
        description=_BODY_DOC,
        operation_class=UpdateTodoOperation,
        responses=errors(400, 404, 413, 503),
    )
    async def update_todo(self, state: State, request: Request, todo_id: FromPath[int]) -> TodoOut:
        # Validate before looking the todo up: a bad body never changes anything.
        values = parse_todo_fields(decode_object(await request.body()), creating=False)

        def apply() -> TodoOut:
            with state.resources.session() as session:
                todo = _find(session, todo_id)
                if todo is None:
                    raise _not_found()
                for key, value in values.items():
                    setattr(todo, key, value)
                session.commit()
                return TodoOut.of(todo)

        return await sync_to_thread(apply)

    @delete(
        "/{todo_id:int}",
        sync_to_thread=True,
        status_code=200,
        summary="Delete a todo (200 with {} if it did not exist)",
        operation_class=DeleteTodoOperation,
        responses=errors(404, 503),
    )
    def delete_todo(self, state: State, todo_id: FromPath[int]) -> TodoOut | dict[str, Any]:
        with state.resources.session() as session:
            todo = _find(session, todo_id)
            if todo is None:
                return {}
            body = TodoOut.of(todo)
            session.delete(todo)
            session.commit()
            return body

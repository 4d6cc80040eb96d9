"""The calendar job's work: read the todos and render them as an iCalendar."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Job, Todo
from workers.ical import CalendarTodo, render_calendar

#: Rows fetched per round trip; with a server-side cursor, memory stays bounded by this.
FETCH_BATCH = 2000


def dated_todos(session: Session) -> Iterator[CalendarTodo]:
    """Every todo with a deadline, soonest first, streamed in batches (Core rows, no ORM)."""
    stmt = (
        select(Todo.id, Todo.title, Todo.description, Todo.deadline_at, Todo.updated_at)
        .where(Todo.deadline_at.is_not(None))
        .order_by(Todo.deadline_at, Todo.id)
        .execution_options(yield_per=FETCH_BATCH)
    )
    for row in session.execute(stmt):
        yield CalendarTodo._make(row)


def calendar_work(uid_domain: str):  # type: ignore[no-untyped-def]
    """The ``Work`` function for ``ical`` jobs, bound to the deployment's UID domain."""

    def work(session: Session, _job: Job) -> str:
        return render_calendar(dated_todos(session), uid_domain=uid_domain)

    return work

"""Index todos by (deadline_at, id), the calendar's order, instead of deadline_at alone.

With deadline_at alone, Postgres had to sort each run of equal deadlines by id: an
incremental sort that was ~20 ms of a 100,000-todo calendar's 140 ms query (EXPLAIN ANALYZE,
docs/BENCHMARKS.md P4). The new index still serves the list's ``deadline_at <= …`` filter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_todos_deadline_at_id", "todos", ["deadline_at", "id"], unique=False)
    op.drop_index("ix_todos_deadline_at", table_name="todos")


def downgrade() -> None:
    op.create_index("ix_todos_deadline_at", "todos", ["deadline_at"], unique=False)
    op.drop_index("ix_todos_deadline_at_id", table_name="todos")

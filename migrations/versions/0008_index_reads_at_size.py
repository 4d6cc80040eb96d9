"""Indexes for the API's reads at a million jobs and a million todos.

Each is the order, or the equality then the order, of a list the API pages by keyset, so a
page reads its own rows from the index and sorts nothing (tests/integration/
test_query_plans.py checks every read's plan at a million rows of each):

- ``GET /api/v1/todos``: newest first by (created_at, id); with ``completed`` the todos of
  that value in the same order (a filter on the first index would skip, at worst, the whole
  table to find a rare value).
- ``GET /api/v1/jobs?status=``: the jobs of that state newest first (a rare state, or one no
  job is in, would otherwise walk every job).

Built as plain CREATE INDEX, as the earlier migrations' are: at a million rows each takes a
second or two, during which writes to its table wait.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (name, table, columns), created in this order and dropped in the reverse.
INDEXES = (
    ("ix_todos_created_at_id", "todos", ["created_at", "id"]),
    ("ix_todos_completed_created_at_id", "todos", ["completed", "created_at", "id"]),
    ("ix_jobs_status_created_at_id", "jobs", ["status", "created_at", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)

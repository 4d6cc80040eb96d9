"""Index jobs by (created_at, id): the jobs list's order and its page boundary.

``GET /api/v1/jobs`` reads newest first and pages by keyset (created_at, id); without the
index each page would sort the whole table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_created_at_id", "jobs", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_created_at_id", table_name="jobs")

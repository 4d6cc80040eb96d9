"""Each attempt of a job on record, and the trace a job belongs to.

- ``job_attempts``: one row per attempt that ended (started, finished, outcome, error, the
  worker that ran it), written by the worker as the attempt ends. The jobs console draws a
  job's timeline from it and measures queue wait and run time over recent windows
  (indexed by ``finished_at``). Rows go with their job (``ON DELETE CASCADE``: the purge
  deletes only jobs).
- ``jobs.traceparent``: the W3C trace context of the request that submitted the job, so the
  row carries its trace id and a resend by the reconciler continues the same trace.

Both are additions only (a new table, a nullable column): instant on a large ``jobs``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.create_table(
        "job_attempts",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('success', 'retry', 'failure', 'cancelled')",
            name=op.f("ck_job_attempts_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_attempts_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "attempt", name=op.f("pk_job_attempts")),
    )
    op.create_index("ix_job_attempts_finished_at", "job_attempts", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_attempts_finished_at", table_name="job_attempts")
    op.drop_table("job_attempts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("traceparent")

"""Jobs as long-running operations: cancel, retry, progress, retention, push, idempotency keys.

- ``CANCELLED``, a new final state (the status check constraint is replaced);
- ``cancel_requested_at``: a running job's cancel request, honoured by its worker;
- ``retry_of`` (unique): the job a retry restarts, at most one retry per job;
- ``stage``, ``progress_done``, ``progress_total``: a running job's progress;
- ``expires_at`` (indexed where a result is left): when a finished job's result expires;
  jobs finished before this migration get their finish + one day (the default
  JOB_RESULT_TTL_S), so they expire like the rest;
- an index on ``finished_at``: retention deletes records by their age;
- ``idempotency_keys``: the first response to a POST sent with an ``Idempotency-Key``;
- on Postgres, a trigger that NOTIFYs ``taskoverflow_jobs`` with the job's id whenever its
  status, attempt, progress or cancel request changes: what ``GET /api/v1/jobs/{id}/events``
  streams.

Adding the columns rewrites nothing (nullable, no default: Postgres only records them in its
catalogue). The rest is not instant on a large table: the backfill updates every finished
row, and the new indexes and the status check each read the whole table while holding a
lock that blocks writes to ``jobs`` (seconds per million rows). Run it in a quiet moment.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('PENDING', 'STARTED', 'RETRY', 'SUCCESS', 'FAILURE')"
_NEW_STATUSES = "status IN ('PENDING', 'STARTED', 'RETRY', 'SUCCESS', 'FAILURE', 'CANCELLED')"

#: The channel ``api.job_events`` listens on (one notification per change, payload: the id).
_NOTIFY = """
CREATE FUNCTION taskoverflow_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskoverflow_jobs', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER UPDATE ON jobs FOR EACH ROW
WHEN (
    OLD.status IS DISTINCT FROM NEW.status
    OR OLD.attempts IS DISTINCT FROM NEW.attempts
    OR OLD.stage IS DISTINCT FROM NEW.stage
    OR OLD.progress_done IS DISTINCT FROM NEW.progress_done
    OR OLD.progress_total IS DISTINCT FROM NEW.progress_total
    OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at
)
EXECUTE FUNCTION taskoverflow_notify_job();
"""


#: Jobs that finished before expiry existed: a day after they finished (Postgres, SQLite).
_BACKFILL = {
    True: "UPDATE jobs SET expires_at = coalesce(finished_at, updated_at) + interval '1 day' "
    "WHERE status IN ('SUCCESS', 'FAILURE') AND expires_at IS NULL",
    # SQLite's datetime() would drop the fraction of a second; %f keeps milliseconds.
    False: "UPDATE jobs SET expires_at = "
    "strftime('%Y-%m-%d %H:%M:%f', coalesce(finished_at, updated_at), '+1 day') "
    "WHERE status IN ('SUCCESS', 'FAILURE') AND expires_at IS NULL",
}


def _replace_status_check(new: str) -> None:
    # On SQLite batch mode copies the table (its reflection carries the CHECKs across).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint("status", new)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("stage", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("progress_done", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("retry_of", sa.Uuid(), nullable=True))
        batch.create_unique_constraint("uq_jobs_retry_of", ["retry_of"])
    _replace_status_check(_NEW_STATUSES)
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"], unique=False)
    op.create_index(
        "ix_jobs_expires_at_with_result",
        "jobs",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("result IS NOT NULL"),
        sqlite_where=sa.text("result IS NOT NULL"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"], unique=False
    )
    op.execute(_BACKFILL[op.get_bind().dialect.name == "postgresql"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_NOTIFY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_notify ON jobs")
        op.execute("DROP FUNCTION taskoverflow_notify_job()")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_jobs_expires_at_with_result", table_name="jobs")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    # Cancelled jobs cannot be told apart in the old states: they become failures.
    op.execute(
        "UPDATE jobs SET status = 'FAILURE', error = coalesce(error, 'cancelled') "
        "WHERE status = 'CANCELLED'"
    )
    _replace_status_check(_OLD_STATUSES)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_retry_of", type_="unique")
        for column in (
            "retry_of",
            "cancel_requested_at",
            "progress_total",
            "progress_done",
            "stage",
            "expires_at",
        ):
            batch.drop_column(column)

"""What the limits need: todo counts kept by triggers, each job's client, rate-limit state.

- ``todo_counts``: one row with the number of todos and of dated todos (a calendar's
  events), filled from ``todos`` here and kept by triggers from then on, whoever writes the
  table. On Postgres they are statement-level triggers over transition tables, so a bulk
  load of a million todos updates the row once, not a million times; SQLite (the
  single-process run) has row triggers.
- ``jobs.client``: who submitted the job (``ip:<address>`` or ``key:<name>``), and a partial
  index on it over unfinished jobs, for the per-client quota; a second partial index gives
  the count of all unfinished jobs (backpressure) without reading finished ones.
- ``rate_limits``: rate-limit state for API processes without a shared Redis (UNLOGGED:
  not worth a write-ahead log; a crash forgets it, forgiving a few requests).
- ``job_admitted()`` (Postgres): whether a job may be added under the limits, deciding one
  admission at a time (api.admission), so the insert that calls it is one round trip.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('PENDING', 'STARTED', 'RETRY')")

#: Postgres: one statement's inserted, deleted or changed rows, counted once per statement.
POSTGRES_TRIGGERS = """
CREATE FUNCTION todo_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE todo_counts SET todos = todos + (SELECT count(*) FROM new_rows),
    dated = dated + (SELECT count(*) FROM new_rows WHERE deadline_at IS NOT NULL);
  RETURN NULL;
END $$;
CREATE FUNCTION todo_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE todo_counts SET todos = todos - (SELECT count(*) FROM old_rows),
    dated = dated - (SELECT count(*) FROM old_rows WHERE deadline_at IS NOT NULL);
  RETURN NULL;
END $$;
CREATE FUNCTION todo_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE change bigint;
BEGIN
  change := (SELECT count(*) FROM new_rows WHERE deadline_at IS NOT NULL)
          - (SELECT count(*) FROM old_rows WHERE deadline_at IS NOT NULL);
  -- Most updates leave the deadline alone: then the row is not touched (nor locked).
  IF change <> 0 THEN
    UPDATE todo_counts SET dated = dated + change;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION todo_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE todo_counts SET todos = 0, dated = 0;
  RETURN NULL;
END $$;
CREATE TRIGGER todo_counts_insert AFTER INSERT ON todos REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_insert();
CREATE TRIGGER todo_counts_delete AFTER DELETE ON todos REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_delete();
CREATE TRIGGER todo_counts_update AFTER UPDATE ON todos
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_update();
CREATE TRIGGER todo_counts_truncate AFTER TRUNCATE ON todos
  FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_truncate();
"""

#: One admission at a time: the advisory lock (two-int form, apart from the jobs' bigint
#: locks) is held until the calling statement's transaction commits, and the counts are
#: taken after it is ours. A VOLATILE PL/pgSQL function takes a fresh snapshot for each
#: statement inside it (READ COMMITTED), so they see every admission committed before:
#: two API processes can never both see room for the last job.
JOB_ADMITTED = """
CREATE FUNCTION job_admitted(overall_max integer, client_key text, client_max integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(6400, 1);
  RETURN (SELECT count(*) FROM (SELECT 1 FROM jobs
            WHERE status IN ('PENDING', 'STARTED', 'RETRY') LIMIT overall_max) a) < overall_max
     AND (SELECT count(*) FROM (SELECT 1 FROM jobs
            WHERE status IN ('PENDING', 'STARTED', 'RETRY') AND client = client_key
            LIMIT client_max) b) < client_max;
END $$;
"""

SQLITE_TRIGGERS = [
    """CREATE TRIGGER todo_counts_insert AFTER INSERT ON todos BEGIN
      UPDATE todo_counts SET todos = todos + 1,
        dated = dated + (NEW.deadline_at IS NOT NULL);
    END""",
    """CREATE TRIGGER todo_counts_delete AFTER DELETE ON todos BEGIN
      UPDATE todo_counts SET todos = todos - 1,
        dated = dated - (OLD.deadline_at IS NOT NULL);
    END""",
    """CREATE TRIGGER todo_counts_update AFTER UPDATE OF deadline_at ON todos BEGIN
      UPDATE todo_counts
        SET dated = dated + (NEW.deadline_at IS NOT NULL) - (OLD.deadline_at IS NOT NULL);
    END""",
]


def upgrade() -> None:
    op.create_table(
        "todo_counts",
        sa.Column("id", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("todos", sa.BigInteger(), nullable=False),
        sa.Column("dated", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id", name=op.f("ck_todo_counts_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_todo_counts")),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Counted and triggered under a lock on todos: no write can slip in between.
        op.execute("LOCK TABLE todos IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO todo_counts (id, todos, dated) SELECT true, count(*), "
        "count(deadline_at) FROM todos"
    )
    if postgres:
        op.execute(POSTGRES_TRIGGERS)
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("client", sa.String(length=80), nullable=True))
    op.create_index(
        "ix_jobs_unfinished_client",
        "jobs",
        ["client"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_index(
        "ix_jobs_unfinished",
        "jobs",
        ["status"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
        prefixes=["UNLOGGED"] if postgres else [],
    )
    if postgres:
        op.execute(JOB_ADMITTED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION job_admitted(integer, text, integer)")
    op.drop_table("rate_limits")
    op.drop_index("ix_jobs_unfinished", table_name="jobs")
    op.drop_index("ix_jobs_unfinished_client", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("client")
    if op.get_bind().dialect.name == "postgresql":
        for event in ("insert", "delete", "update", "truncate"):
            op.execute(f"DROP TRIGGER todo_counts_{event} ON todos")
            op.execute(f"DROP FUNCTION todo_counts_{event}()")
    else:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER todo_counts_{event}")
    op.drop_table("todo_counts")

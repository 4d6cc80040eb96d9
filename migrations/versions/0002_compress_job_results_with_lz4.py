"""Compress calendar results with LZ4 instead of pglz.

A 100,000-todo calendar is ~15 MB of text. Postgres compresses large values before storing
them (TOAST); with its default pglz, writing that result took 0.19-0.26 s, with LZ4 0.09-0.10 s
(LZ4's output is ~18 % larger: 1.7 MB instead of 1.5 MB). Reads are as fast either way.
See docs/BENCHMARKS.md (P4). Postgres only (14+, built with LZ4, as Debian's packages and
RDS are); other databases and builds without LZ4 keep their default.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SET = """
DO $$
BEGIN
    ALTER TABLE jobs ALTER COLUMN result SET COMPRESSION {method};
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'jobs.result keeps its compression: %', SQLERRM;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SET.format(method="lz4"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SET.format(method="default"))

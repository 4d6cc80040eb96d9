"""Keep job results as gzip bytes, stored out of line uncompressed, with their text size.

``jobs.result`` was text that Postgres compressed itself (LZ4, migration 0002): a
million-todo calendar is 160 MB of it, which the worker had to hold several times over to
write and the API to hold whole to serve. It becomes one gzip stream (models.results) that
the worker writes as it renders and the API reads in slices. STORAGE EXTERNAL keeps
Postgres from compressing it again and lets a slice (``substr``) read only its own pages.
``result_bytes`` is the text's length, the Content-Length of a decompressed download.

Existing results are converted in place.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import zlib
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_jobs_expires_at_with_result"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # as models.results (migrations never import the models)


def _gzip(text: str) -> tuple[bytes, int]:
    data = text.encode("utf-8")
    compressor = zlib.compressobj(1, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush(), len(data)


def _convert(change: Callable[[object], dict[str, object]]) -> None:
    """Set the columns ``change`` gives from ``result``, row by row, for every stored result
    (one at a time: a result can be 160 MB)."""
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM jobs WHERE result IS NOT NULL"))]
    for job_id in ids:
        value = conn.execute(
            sa.text("SELECT result FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()
        values = change(value)
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        update = f"UPDATE jobs SET {assignments} WHERE id = :id"  # noqa: S608 (our columns)
        conn.execute(sa.text(update), {"id": job_id, **values})


def _to_gzip(value: object) -> dict[str, object]:
    data, size = _gzip(str(value))
    return {"result_gzip": data, "result_bytes": size}


def _to_text(value: object) -> dict[str, object]:
    data = bytes(value) if isinstance(value, bytes | memoryview) else b""  # bytea or BLOB
    return {"result_text": zlib.decompress(data, _GZIP_WBITS).decode("utf-8")}


def _index() -> None:
    op.create_index(
        _INDEX,
        "jobs",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("result IS NOT NULL"),
        sqlite_where=sa.text("result IS NOT NULL"),
    )


def upgrade() -> None:
    op.add_column("jobs", sa.Column("result_gzip", sa.LargeBinary(), nullable=True))
    op.add_column("jobs", sa.Column("result_bytes", sa.BigInteger(), nullable=True))
    _convert(_to_gzip)
    op.drop_index(_INDEX, table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result")
        batch.alter_column("result_gzip", new_column_name="result")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs ALTER COLUMN result SET STORAGE EXTERNAL")
    _index()


def downgrade() -> None:
    op.add_column("jobs", sa.Column("result_text", sa.Text(), nullable=True))
    _convert(_to_text)
    op.drop_index(_INDEX, table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result")
        batch.drop_column("result_bytes")
        batch.alter_column("result_text", new_column_name="result")
    if op.get_bind().dialect.name == "postgresql":
        # As migration 0002 left it (LZ4 where the server has it).
        op.execute(
            "DO $$ BEGIN ALTER TABLE jobs ALTER COLUMN result SET COMPRESSION lz4; "
            "EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN NULL; END $$"
        )
    _index()

"""Alembic is the only way the schema is made: it works both ways and matches the models."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, pool, select

from models import Base, Job, schema
from models.settings import normalise_database_url
from tests.services import ROOT, migrate, scratch_database

ALL_TABLES = {
    "alembic_version",
    "idempotency_keys",
    "job_attempts",
    "jobs",
    "rate_limits",
    "todo_counts",
    "todos",
}


def engine_for(url: str):  # type: ignore[no-untyped-def]
    return create_engine(normalise_database_url(url), poolclass=pool.NullPool)


def test_upgrade_head_downgrade_base_and_back_on_an_empty_database():
    """`alembic upgrade head` on an empty database, down to base, and up again."""
    with scratch_database("taskoverflow_migrate") as url:
        env = {**os.environ, "DATABASE_URL": url}
        alembic = [sys.executable, "-m", "alembic"]
        for args, tables in (
            (["upgrade", "head"], ALL_TABLES),
            (["downgrade", "base"], {"alembic_version"}),
            (["upgrade", "head"], ALL_TABLES),
        ):
            done = subprocess.run(
                alembic + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            engine = engine_for(url)
            assert set(inspect(engine).get_table_names()) == tables
            engine.dispose()


def test_models_and_migrations_agree():
    """Autogenerate against the migrated database finds nothing to change."""
    with scratch_database("taskoverflow_drift") as url:
        migrate(url)
        engine = engine_for(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        engine.dispose()
    assert diff == []


def test_alembic_refuses_to_run_without_database_url():
    """A missing DATABASE_URL is a clear error, not a traceback or a default database."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DATABASE_URL is not set" in done.stderr


def test_migrations_run_on_sqlite_both_ways_and_match_the_models(tmp_path):  # type: ignore[no-untyped-def]
    """The zero-setup run's SQLite gets the same schema: up, down, up, and no drift."""
    url = f"sqlite:///{tmp_path / 'taskoverflow.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": url}
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    engine = create_engine(url, poolclass=pool.NullPool)
    assert set(inspect(engine).get_table_names()) == ALL_TABLES
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_jobs_finished_before_0005_expire_a_day_after_they_finished(dialect, tmp_path):  # type: ignore[no-untyped-def]
    """Rows from before result expiry existed get one (else they would be kept for ever);
    unfinished ones stay without."""
    finished = datetime(2026, 11, 1, 12, 30, 15, 250000)
    done, failed, running = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with contextlib.ExitStack() as stack:
        if dialect == "postgresql":
            url = stack.enter_context(scratch_database("taskoverflow_backfill"))
        else:
            url = f"sqlite:///{tmp_path / 'backfill.sqlite3'}"
        engine = engine_for(url)
        stack.callback(engine.dispose)
        schema.upgrade(engine, "0004")
        with engine.begin() as conn:  # only columns that exist at 0004
            conn.execute(
                insert(Job),
                [
                    {
                        "id": job_id,
                        "kind": "ical",
                        "status": status,
                        "attempts": 1,
                        "created_at": finished,
                        "updated_at": finished,
                        "finished_at": end,
                    }
                    for job_id, status, end in (
                        (done, "SUCCESS", finished),
                        (failed, "FAILURE", finished),
                        (running, "STARTED", None),
                    )
                ],
            )
        schema.upgrade(engine)
        with engine.connect() as conn:
            expiry = {row.id: row.expires_at for row in conn.execute(select(Job))}
    assert expiry == {
        done: finished + timedelta(days=1),
        failed: finished + timedelta(days=1),
        running: None,
    }


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_results_stored_as_text_become_gzip_and_back(dialect, tmp_path):  # type: ignore[no-untyped-def]
    """0009 converts the results already stored (text before it, gzip after) and its
    downgrade turns them back into the same text: no result is lost either way."""
    calendar = "BEGIN:VCALENDAR\r\nSUMMARY:caf\u00e9 \u2603\r\nEND:VCALENDAR\r\n" * 500
    done, purged = uuid.uuid4(), uuid.uuid4()
    text_rows = "SELECT id, result FROM jobs ORDER BY result IS NULL"
    with contextlib.ExitStack() as stack:
        if dialect == "postgresql":
            url = stack.enter_context(scratch_database("taskoverflow_results"))
        else:
            url = f"sqlite:///{tmp_path / 'results.sqlite3'}"
        engine = engine_for(url)
        stack.callback(engine.dispose)
        schema.upgrade(engine, "0008")
        moment = datetime(2026, 12, 1, 9, 0)
        with engine.begin() as conn:  # at 0008 the result is a text column
            for job_id, result in ((done, calendar), (purged, None)):
                conn.exec_driver_sql(
                    "INSERT INTO jobs (id, kind, status, attempts, result, created_at, "
                    "updated_at) VALUES (?, 'ical', 'SUCCESS', 1, ?, ?, ?)"
                    if dialect == "sqlite"
                    else "INSERT INTO jobs (id, kind, status, attempts, result, created_at, "
                    "updated_at) VALUES (%s, 'ical', 'SUCCESS', 1, %s, %s, %s)",
                    (job_id.hex if dialect == "sqlite" else str(job_id), result, moment, moment),
                )
        schema.upgrade(engine)
        with engine.connect() as conn:
            rows = {row.id: (row.result, row.result_bytes) for row in conn.execute(select(Job))}
            stored = conn.exec_driver_sql(
                "SELECT length(result) FROM jobs WHERE result IS NOT NULL"
            ).scalar_one()
        assert rows == {done: (calendar, len(calendar.encode())), purged: (None, None)}
        assert stored < len(calendar.encode()) / 10  # kept compressed, not as text
        schema.downgrade(engine, "0008")
        with engine.connect() as conn:
            back = [tuple(row) for row in conn.exec_driver_sql(text_rows)]
        assert [result for _, result in back] == [calendar, None]

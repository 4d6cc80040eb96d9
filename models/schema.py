"""Bring a database to the newest schema in-process (``alembic upgrade head`` on an engine).

For the single-process run and the tests; deployments run ``alembic upgrade head`` as a
one-off step. Alembic stays the only way the schema is made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

#: The repository root, where alembic.ini and migrations/ live.
ROOT = Path(__file__).resolve().parent.parent


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Back to ``revision`` (the migrations' own tests: each works both ways)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, run: Callable[[Config, str], None], revision: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["configure_logger"] = False
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # Our engines turn SQLite's foreign keys on (job_attempts' cascade). A batch
            # migration recreates a table (DROP, then rename a copy): with them on, dropping
            # jobs would first delete every job_attempts row. The alembic command line runs
            # with them off (SQLite's default); so does this. Outside a transaction, where
            # SQLite honours the pragma.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()  # ends SQLAlchemy's autobegun transaction (no BEGIN was sent)
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                run(config, revision)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()

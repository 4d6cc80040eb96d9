"""Bring a database to the newest schema in-process (``alembic upgrade head`` on an engine).

For the single-process run and the tests; deployments run ``alembic upgrade head`` as a
one-off step. Alembic stays the only way the schema is made.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

#: The repository root, where alembic.ini and migrations/ live.
ROOT = Path(__file__).resolve().parent.parent


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["configure_logger"] = False
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

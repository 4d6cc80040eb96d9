"""Alembic environment: migrates the database the settings name (or a given connection).

Reads the database settings like the API and the workers do, so the migration task needs
exactly their variables: DATABASE_URL, and the password from DB_PASSWORD_SECRET_ARN (ECS),
DB_PASSWORD or the URL.
"""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from models import Base
from models.credentials import use_password
from models.settings import ConfigError, DatabaseSettings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _settings() -> DatabaseSettings:
    # Only the database group: the migration task is given nothing else (no BROKER_URL).
    try:
        return DatabaseSettings.from_env(os.environ)
    except ConfigError as exc:
        raise SystemExit(f"alembic: configuration error: {exc}") from None


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_settings().url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # handed in by a test or by the zero-setup runner
        _configure(connection)
        return
    settings = _settings()
    # No statement timeout here: a migration may rewrite a large table.
    engine = create_engine(
        settings.url,
        poolclass=pool.NullPool,
        connect_args={"connect_timeout": settings.connect_timeout_s}
        if settings.url.startswith("postgresql")
        else {},
    )
    if engine.dialect.name == "postgresql":
        use_password(engine, settings.database_password())
    with engine.connect() as connection:
        _configure(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

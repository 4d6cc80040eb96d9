"""Settings: read once from a mapping, validated, with clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models.settings import (
    ConfigError,
    DatabaseSettings,
    MissingInProduction,
    Settings,
    normalise_database_url,
    redact_url,
)
from tests.services import ROOT

BASE = {"DATABASE_URL": "postgresql://u@db:5432/t", "BROKER_URL": "redis://r:6379/0"}


def test_postgresql_urls_are_pointed_at_psycopg2():
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3, which we do not ship."""
    assert normalise_database_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalise_database_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalise_database_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_the_api_gets_the_async_driver_of_each_database():
    """The API's engine: asyncpg for Postgres, aiosqlite for SQLite, the rest of the URL kept."""
    from api.database import async_database_url

    assert async_database_url("postgresql+psycopg2://u:p%40ss@h:5432/db") == (
        "postgresql+asyncpg://u:p%40ss@h:5432/db"
    )
    assert async_database_url("sqlite:////tmp/x.sqlite3") == "sqlite+aiosqlite:////tmp/x.sqlite3"


def test_defaults_are_explicit_production_values():
    """Unset optional variables take our defaults, not the libraries'."""
    settings = Settings.from_env(BASE)
    assert settings.database.url == "postgresql+psycopg2://u@db:5432/t"
    assert settings.jobs.max_retries == 5
    assert settings.jobs.max_backoff_ms <= 900_000
    assert settings.jobs.time_limit_ms == 60_000
    assert settings.broker.queue_name == "ical"


@pytest.mark.parametrize("missing", ["DATABASE_URL", "BROKER_URL"])
def test_required_variables_must_be_set(missing: str):
    """A missing required variable names itself and what it is for."""
    environ = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=f"{missing} is not set"):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"JOB_MAX_BACKOFF_MS": "900001"}, "exceeds 900000 ms"),
        ({"JOB_MIN_BACKOFF_MS": "0"}, "JOB_MIN_BACKOFF_MS must be positive"),
        ({"BROKER_URL": "amqp://x"}, "BROKER_URL must be a redis:// or sqs:// URL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json, console or auto"),
        ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE must be at least 1"),
        ({"DB_PASSWORD_SECRET_ARN": "my-secret"}, "must be a secret's ARN"),
        ({"DATABASE_URL": "postgresql://u@h/db?sslmode=on"}, "sslmode must be one of"),
        ({"WORKER_PROCESSES": "0"}, "WORKER_PROCESSES must be at least 1, not 0"),
        ({"WORKER_PROCESSES": "-1"}, "WORKER_PROCESSES must be at least 1, not -1"),
        ({"DRAMATIQ_THREADS": "0"}, "DRAMATIQ_THREADS must be at least 1"),
        ({"WORKER_SHUTDOWN_TIMEOUT_MS": "-5"}, "WORKER_SHUTDOWN_TIMEOUT_MS must not be negative"),
    ],
)
def test_unsafe_or_malformed_values_are_refused(extra: dict[str, str], message: str):
    """Values that would lose jobs or cannot be parsed stop start-up with a reason."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, **extra})


@pytest.mark.parametrize(
    "name", ["JOB_MAX_RETRIES", "WORKER_PROCESSES", "WORKER_SHUTDOWN_TIMEOUT_MS"]
)
@pytest.mark.parametrize("value", ["two", "", "1.5"])
def test_an_integer_variable_refuses_what_is_not_an_integer(name: str, value: str):
    """Even empty: only an optional variable takes "" for unset."""
    with pytest.raises(ConfigError, match=re.escape(f"{name} must be an integer, not {value!r}")):
        Settings.from_env({**BASE, name: value})


def test_env_names_lists_every_variable_read():
    """The list the docs and config checks rely on covers each group."""
    names = Settings.env_names()
    for name in (
        "DATABASE_URL",
        "BROKER_URL",
        "JOB_TIME_LIMIT_MS",
        "LOG_FORMAT",
        "PUBLIC_BASE_URL",
        "WORKER_PROCESSES",
        "DRAMATIQ_THREADS",
        "WORKER_SHUTDOWN_TIMEOUT_MS",
        "PORT",
        "TASKOVERFLOW_DATA_DIR",
    ):
        assert name in names
    assert len(names) == len(set(names))


def test_the_readme_documents_every_variable():
    """The README's configuration table (and its SQS section) names each variable read."""
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", Path(ROOT, "README.md").read_text()))
    assert set(Settings.env_names()) - documented == set()


def test_no_process_reads_the_environment_but_the_settings():
    """One reader: the entry points hand os.environ to models.settings and read nothing else."""
    entry_points = [
        *Path(ROOT, "api").rglob("*.py"),
        *Path(ROOT, "workers").rglob("*.py"),
        *(p for p in Path(ROOT, "models").rglob("*.py") if p.name != "settings.py"),
        Path(ROOT, "migrations", "env.py"),
        Path(ROOT, "ops", "dev", "standalone.py"),
    ]
    # Reading a variable; handing the whole mapping to the settings (or on to a child) is fine.
    pattern = re.compile(r"getenv|environ\.get\(|environ\[")
    readers = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in entry_points
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert readers == []


SQS = {**BASE, "BROKER_URL": "sqs://"}


def test_sqs_visibility_defaults_to_the_time_limit_plus_a_margin():
    """Never dramatiq-sqs's 12 hours: time limit (60 s) + 30 s."""
    assert Settings.from_env(SQS).broker.sqs_visibility_timeout_s == 90
    fast = Settings.from_env({**SQS, "JOB_TIME_LIMIT_MS": "5500"})
    assert fast.broker.sqs_visibility_timeout_s == 36


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"SQS_VISIBILITY_TIMEOUT_S": "60"},
            "SQS_VISIBILITY_TIMEOUT_S=60 must exceed the job time limit",
        ),
        ({"SQS_VISIBILITY_TIMEOUT_S": "50000"}, "cannot exceed 43200"),
        ({"JOB_MAX_BACKOFF_MS": "1000000"}, "JOB_MAX_BACKOFF_MS=1000000 exceeds 900000 ms"),
        ({"SQS_WAIT_TIME_S": "21"}, "SQS_WAIT_TIME_S must be between 0 and 20"),
        ({"SQS_CREATE_QUEUES": "maybe"}, "SQS_CREATE_QUEUES must be true or false"),
    ],
)
def test_sqs_settings_that_would_lose_or_strand_jobs_are_refused(
    extra: dict[str, str], message: str
):
    """A visibility not above the time limit, or a backoff SQS cannot delay, stops start-up."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**SQS, **extra})


def test_db_password_stays_out_of_the_url_and_is_never_shown():
    """DB_PASSWORD is handed to the driver per connection, never joined into a URL string
    that could be logged; repr hides it."""
    settings = Settings.from_env(
        {
            **BASE,
            "DATABASE_URL": "postgresql://app@db.internal:5432/t?sslmode=require",
            "DB_PASSWORD": "p@ss/w:rd",
        }
    )
    assert settings.database.url == "postgresql+psycopg2://app@db.internal:5432/t?sslmode=require"
    assert settings.database.database_password().current() == "p@ss/w:rd"
    assert "p@ss" not in repr(settings.database)
    assert "p%40ss" not in repr(settings)


def test_a_password_written_in_the_url_is_taken_out_of_it():
    """DATABASE_URL's own password goes to the driver per connection like DB_PASSWORD; the
    URL kept (and logged, and shown in errors) has none."""
    database = DatabaseSettings.from_env(
        {"DATABASE_URL": "postgresql://app:S3cret%40pw@db:5432/t?sslmode=require"}
    )
    assert database.url == "postgresql+psycopg2://app@db:5432/t?sslmode=require"
    assert database.database_password().current() == "S3cret@pw"
    assert "S3cret" not in repr(database)
    overridden = DatabaseSettings.from_env(
        {"DATABASE_URL": "postgresql://app:old@db/t", "DB_PASSWORD": "new"}
    )
    assert (overridden.url, overridden.password) == ("postgresql+psycopg2://app@db/t", "new")


def test_a_url_holding_a_password_is_refused_at_construction():
    """Nothing builds DatabaseSettings around a URL with a password by going past from_env."""
    with pytest.raises(ConfigError, match="must not hold the password"):
        DatabaseSettings(url="postgresql+psycopg2://app:S3cret@db/t")


@pytest.mark.parametrize(
    "extra",
    [
        {"DATABASE_URL": "postgresql://app:S3cret@db/t?sslmode=on"},
        {
            "DATABASE_URL": "postgresql://app:S3cret@db/t",
            "TASKOVERFLOW_ENV": "production",
            "BROKER_URL": "memory://",
        },
        {"BROKER_URL": "amqp://app:S3cret@mq:5672/"},
        {"DATABASE_URL": "postgresql://app:S3cret@db/t", "DB_POOL_SIZE": "0"},
    ],
)
def test_configuration_errors_never_show_a_password(extra: dict[str, str]):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, **extra})
    assert "S3cret" not in str(refused.value)


def test_reprs_hide_passwords_in_broker_urls():
    """A Redis URL may carry a password too: reprs show it as ***."""
    settings = Settings.from_env({**BASE, "BROKER_URL": "redis://:S3cret@r:6379/0"})
    assert "S3cret" not in repr(settings)
    assert "redis://:***@r:6379/0" in repr(settings.broker)
    assert redact_url("rediss://u:S3cret@r/0?password=S3cret&db=1") == (
        "rediss://u:***@r/0?password=***&db=1"
    )
    assert redact_url("sqlite:////tmp/x.sqlite3") == "sqlite:////tmp/x.sqlite3"
    # Written raw, a password may hold what ends a URL's authority for a parser.
    assert redact_url("redis://:pa/ss?#x@r:6379/0") == "redis://:***@r:6379/0"
    assert redact_url("postgresql://u:a@b@h/db") == "postgresql://u:***@h/db"


def test_a_password_in_the_query_string_leaves_the_url_too():
    """libpq's ?password=... moves into the password field like user:password@ does."""
    database = DatabaseSettings.from_env(
        {"DATABASE_URL": "postgresql://u@h/db?password=S3cret&sslmode=require"}
    )
    assert database.url == "postgresql+psycopg2://u@h/db?sslmode=require"
    assert database.password == "S3cret"  # noqa: S105 (a test value)


def test_settings_are_final_when_built():
    """Frozen, with derived values computed before construction (nothing patched after)."""
    settings = Settings.from_env({**BASE, "BROKER_URL": "sqs://"})
    with pytest.raises(AttributeError):
        settings.broker.url = "redis://elsewhere"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="SQS_VISIBILITY_TIMEOUT_S must be settled"):
        Settings(
            database=settings.database,
            broker=type(settings.broker)(url="sqs://"),
            jobs=settings.jobs,
            api=settings.api,
            log=settings.log,
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"DATABASE_URL": "sqlite:///taskoverflow.sqlite3"}, "needs a Postgres DATABASE_URL"),
        ({"BROKER_URL": "memory://"}, "needs a redis:// or sqs:// BROKER_URL"),
        ({"TASKOVERFLOW_ENV": "prod"}, "TASKOVERFLOW_ENV must be development or production"),
    ],
)
def test_production_refuses_the_single_process_stand_ins(extra: dict[str, str], message: str):
    """TASKOVERFLOW_ENV=production (set in both images) never runs on SQLite or in memory."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, "TASKOVERFLOW_ENV": "production", **extra})


def test_development_allows_sqlite_and_the_in_memory_broker():
    """The zero-setup run's settings are valid outside production."""
    settings = Settings.from_env({"DATABASE_URL": "sqlite:///x.sqlite3", "BROKER_URL": "memory://"})
    assert settings.broker.is_in_memory
    assert not settings.deploy.is_production


def test_the_zero_setup_run_falls_back_to_sqlite_and_the_in_memory_broker(tmp_path: Path):
    """Without DATABASE_URL and BROKER_URL: a SQLite file in TASKOVERFLOW_DATA_DIR, memory://."""
    settings = Settings.for_zero_setup({"TASKOVERFLOW_DATA_DIR": str(tmp_path), "PORT": "7001"})
    assert settings.database.url == f"sqlite:///{tmp_path / 'taskoverflow.sqlite3'}"
    assert settings.broker.is_in_memory
    assert settings.zero_setup.port == 7001
    given = Settings.for_zero_setup(BASE)
    assert (given.database.url, given.broker.url) == (
        "postgresql+psycopg2://u@db:5432/t",
        "redis://r:6379/0",
    )


def test_the_zero_setup_run_never_falls_back_in_production():
    with pytest.raises(MissingInProduction, match=r"^DATABASE_URL and BROKER_URL not set"):
        Settings.for_zero_setup({"TASKOVERFLOW_ENV": "production"})
    with pytest.raises(MissingInProduction, match=r"^BROKER_URL not set"):
        Settings.for_zero_setup({**BASE, "BROKER_URL": "", "TASKOVERFLOW_ENV": "production"})


@pytest.mark.parametrize(
    ("port", "message"), [("0", "PORT must be between 1 and 65535"), ("http", "PORT must be an")]
)
def test_a_port_that_cannot_be_listened_on_is_refused(port: str, message: str):
    with pytest.raises(ConfigError, match=message):
        Settings.for_zero_setup({"PORT": port})

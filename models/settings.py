"""Typed settings, read once from the environment by each entry point and passed down.

Every field names the environment variable it comes from and says what it is for; the
README's configuration table is this file in prose. Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, get_type_hints

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from models.credentials import DatabasePassword, read_secret_password

#: SQS rejects a message delay above 15 minutes; dramatiq-sqs swallows that error and
#: deletes the message, so no retry backoff may ever exceed it (README, "Running on SQS").
SQS_MAX_DELAY_MS = 900_000

#: Default SQS visibility timeout = job time limit + this: room for the attempt to finish,
#: be acknowledged, and for the worker's clock and SQS's to disagree a little.
SQS_VISIBILITY_MARGIN_S = 30


#: libpq's sslmode values (DATABASE_URL ?sslmode=...; the API passes them on to asyncpg).
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


class ConfigError(ValueError):
    """The environment describes a configuration we refuse to start with."""


def env(name: str, doc: str, default: Any = dataclasses.MISSING) -> Any:
    """Declare a settings field read from environment variable ``name``."""
    return field(default=default, metadata={"env": name, "doc": doc})


def _parse(name: str, raw: str, annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType):  # ``str | None``: empty means unset
        (annotation,) = (a for a in annotation.__args__ if a is not type(None))
        if raw == "":
            return None
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}")
    if annotation is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    return raw


class _FromEnv:
    """Build a settings group from a mapping of environment variables."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = f.metadata["env"]
            if name in environ:
                values[f.name] = _parse(name, environ[name], hints[f.name])
            elif f.default is dataclasses.MISSING:
                raise ConfigError(f"{name} is not set: {f.metadata['doc']}")
        return cls(**values)

    @classmethod
    def env_names(cls) -> list[str]:
        return [f.metadata["env"] for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


@dataclass(frozen=True, repr=False)
class DatabaseSettings(_FromEnv):
    url: str = env(
        "DATABASE_URL",
        "SQLAlchemy URL of the Postgres database, e.g. postgresql://user@host:5432/taskoverflow",
    )
    password: str | None = env(
        "DB_PASSWORD",
        "password for DATABASE_URL's user, kept out of the URL; overrides any password in the URL",
        None,
    )
    password_secret_arn: str | None = env(
        "DB_PASSWORD_SECRET_ARN",
        "Secrets Manager secret holding the password (JSON with a password field, as RDS "
        "keeps its managed master password, or the bare password); read at the first "
        "connection and again whenever the database refuses the password, so a rotation "
        "needs no restart (ECS). Overrides DB_PASSWORD",
        None,
    )
    pool_size: int = env(
        "DB_POOL_SIZE",
        "connections per process; the API sizes its broker-send thread pool to match",
        10,
    )
    statement_timeout_ms: int = env(
        "DB_STATEMENT_TIMEOUT_MS",
        "server-side cap on one SQL statement (a blocked psycopg2 call cannot be interrupted "
        "from Python, so the database has to end it)",
        30_000,
    )
    connect_timeout_s: int = env(
        "DB_CONNECT_TIMEOUT_S", "give up connecting after this many seconds", 5
    )

    def __repr__(self) -> str:
        # Never print a password (settings end up in logs and tracebacks).
        return f"DatabaseSettings(url={make_url(self.url)!r}, pool_size={self.pool_size})"

    def __post_init__(self) -> None:
        url = normalise_database_url(self.url)
        try:
            sslmode = make_url(url).query.get("sslmode")
        except ArgumentError:
            raise ConfigError("DATABASE_URL is not a valid database URL") from None
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ConfigError(f"DATABASE_URL: sslmode must be one of {sorted(SSL_MODES)}")
        # The password is never joined into the URL: engines hand it to the driver per
        # connection (models.credentials), so no URL string can leak it or go stale.
        object.__setattr__(self, "url", url)
        if self.pool_size < 1:
            raise ConfigError("DB_POOL_SIZE must be at least 1")
        arn = self.password_secret_arn
        if arn is not None and not arn.startswith("arn:"):
            raise ConfigError("DB_PASSWORD_SECRET_ARN must be a secret's ARN (arn:aws:...)")

    def database_password(self) -> DatabasePassword:
        """Where new connections get their password (see models.credentials)."""
        arn = self.password_secret_arn
        if arn is not None:
            return DatabasePassword(read=lambda: read_secret_password(arn))
        return DatabasePassword(fixed=self.password)


def normalise_database_url(url: str) -> str:
    """Point plain Postgres URLs at psycopg2, the driver we ship.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, which is not installed; Heroku-style
    ``postgres://`` is not recognised at all.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class BrokerSettings(_FromEnv):
    url: str = env(
        "BROKER_URL",
        "where job messages travel: redis://host:6379/0 (development) or sqs:// (production; "
        "region and endpoint from SQS_REGION / SQS_ENDPOINT_URL)",
    )
    queue_name: str = env("QUEUE_NAME", "the Dramatiq queue calendar jobs are sent to", "ical")
    namespace: str = env(
        "BROKER_NAMESPACE",
        "prefix of every broker key, so several deployments can share one Redis",
        "taskoverflow",
    )
    redis_heartbeat_timeout_ms: int = env(
        "REDIS_HEARTBEAT_TIMEOUT_MS",
        "a worker silent this long is presumed dead and its unacked messages are re-queued",
        15_000,
    )
    redis_maintenance_chance: int = env(
        "REDIS_MAINTENANCE_CHANCE",
        "broker calls per million that also re-queue dead workers' messages (Dramatiq's "
        "default, 1000, leaves a crashed worker's job stranded for 10+ minutes on a quiet "
        "queue; 50000 = 5% runs it about once a second per idle worker process)",
        50_000,
    )
    send_timeout_s: int = env(
        "BROKER_SEND_TIMEOUT_S", "the API gives up sending a job message after this long", 5
    )
    sqs_region: str = env("SQS_REGION", "AWS region of the SQS queues", "us-east-1")
    sqs_endpoint_url: str | None = env(
        "SQS_ENDPOINT_URL",
        "SQS-compatible endpoint (a local moto server: http://127.0.0.1:5000); unset on AWS",
        None,
    )
    sqs_visibility_timeout_s: int | None = env(
        "SQS_VISIBILITY_TIMEOUT_S",
        "how long a received message stays hidden before SQS redelivers it (a crashed "
        "worker's job comes back after this); default: the job time limit + 30 s, and it "
        "must exceed the time limit",
        None,
    )
    sqs_wait_time_s: int = env(
        "SQS_WAIT_TIME_S",
        "long-poll wait of each receive (0-20): a message is handed over the moment it "
        "arrives, and an idle worker makes one request per this many seconds",
        5,
    )
    sqs_max_receive_count: int = env(
        "SQS_MAX_RECEIVE_COUNT",
        "receives before SQS moves a message to the DLQ (crash loops, undecodable messages); "
        "used when this code creates the queues, and mirrored by ops/ Terraform",
        5,
    )
    sqs_create_queues: bool = env(
        "SQS_CREATE_QUEUES",
        "development only: create missing queues (and their DLQs) instead of refusing to start",
        False,
    )

    @property
    def is_sqs(self) -> bool:
        return self.url.startswith("sqs://")

    @property
    def is_in_memory(self) -> bool:
        """memory://: Dramatiq's in-process broker, for the single-process zero-setup run."""
        return self.url.startswith("memory://")

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://", "sqs://", "memory://")):
            raise ConfigError(f"BROKER_URL must be a redis:// or sqs:// URL, not {self.url!r}")
        if not 0 <= self.sqs_wait_time_s <= 20:
            raise ConfigError("SQS_WAIT_TIME_S must be between 0 and 20 (SQS's long-poll cap)")
        if self.sqs_max_receive_count < 1:
            raise ConfigError("SQS_MAX_RECEIVE_COUNT must be at least 1")
        if not 1 <= self.redis_maintenance_chance <= 1_000_000:
            raise ConfigError("REDIS_MAINTENANCE_CHANCE must be between 1 and 1000000")


@dataclass(frozen=True)
class JobSettings(_FromEnv):
    time_limit_ms: int = env(
        "JOB_TIME_LIMIT_MS",
        "an attempt running longer than this is interrupted and retried",
        60_000,
    )
    max_retries: int = env(
        "JOB_MAX_RETRIES", "transient failures retried this many times before FAILURE", 5
    )
    min_backoff_ms: int = env("JOB_MIN_BACKOFF_MS", "first retry delay (doubles each time)", 500)
    max_backoff_ms: int = env(
        "JOB_MAX_BACKOFF_MS",
        f"longest retry delay; at most {SQS_MAX_DELAY_MS} (SQS's 15-minute delay cap)",
        60_000,
    )
    reconcile_interval_s: int = env(
        "RECONCILE_INTERVAL_S", "how often each worker process looks for stranded jobs", 10
    )
    pending_grace_s: int = env(
        "RECONCILE_PENDING_AFTER_S",
        "a job PENDING this long since its last send is sent again (a lost message, or an "
        "API that died between commit and send)",
        60,
    )
    calendar_uid_domain: str = env(
        "CALENDAR_UID_DOMAIN",
        "right-hand side of every event UID (<todo id>@<domain>, RFC 5545 §3.8.4.7)",
        "taskoverflow.local",
    )

    def __post_init__(self) -> None:
        if self.max_backoff_ms > SQS_MAX_DELAY_MS:
            raise ConfigError(
                f"JOB_MAX_BACKOFF_MS={self.max_backoff_ms} exceeds {SQS_MAX_DELAY_MS} ms: SQS "
                "cannot delay a message longer than 15 minutes, and such a retry would be lost"
            )
        if not 0 < self.min_backoff_ms <= self.max_backoff_ms:
            raise ConfigError("JOB_MIN_BACKOFF_MS must be positive and <= JOB_MAX_BACKOFF_MS")
        if self.time_limit_ms < 1000:
            raise ConfigError("JOB_TIME_LIMIT_MS must be at least 1000")
        if self.max_retries < 0:
            raise ConfigError("JOB_MAX_RETRIES must not be negative")
        if self.reconcile_interval_s < 1 or self.pending_grace_s < 1:
            raise ConfigError("RECONCILE_INTERVAL_S and RECONCILE_PENDING_AFTER_S must be >= 1")

    @property
    def stale_after_s(self) -> float:
        """A STARTED/RETRY job untouched this long has lost its worker or its message."""
        return self.time_limit_ms / 1000 + self.max_backoff_ms / 1000 + self.pending_grace_s


@dataclass(frozen=True)
class ApiSettings(_FromEnv):
    max_body_bytes: int = env(
        "API_MAX_BODY_BYTES", "larger request bodies are refused with 413", 16_384
    )
    public_base_url: str | None = env(
        "PUBLIC_BASE_URL",
        "scheme://host[:port] used in task_url/result_url; unset: taken from the request",
        None,
    )
    faults: str | None = env(
        "TASKOVERFLOW_FAULTS",
        "reliability tests only: crash-after-commit makes the API process exit between "
        "committing a job and sending it (refused in production)",
        None,
    )

    def __post_init__(self) -> None:
        if self.faults not in (None, "crash-after-commit"):
            raise ConfigError(f"TASKOVERFLOW_FAULTS: unknown fault {self.faults!r}")


@dataclass(frozen=True)
class DeploySettings(_FromEnv):
    environment: str = env(
        "TASKOVERFLOW_ENV",
        "development or production; production refuses the single-process stand-ins "
        "(SQLite, the in-memory broker) so a missing variable can never fall back to them",
        "development",
    )

    def __post_init__(self) -> None:
        if self.environment not in ("development", "production"):
            raise ConfigError(
                f"TASKOVERFLOW_ENV must be development or production, not {self.environment!r}"
            )

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


@dataclass(frozen=True)
class LogSettings(_FromEnv):
    format: str = env(
        "LOG_FORMAT", "json, console, or auto (console on a terminal, JSON otherwise)", "auto"
    )
    level: str = env("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", "INFO")

    def __post_init__(self) -> None:
        if self.format not in ("json", "console", "auto"):
            raise ConfigError(f"LOG_FORMAT must be json, console or auto, not {self.format!r}")
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR: {self.level!r}")


def sqs_visibility_timeout_s(broker: BrokerSettings, jobs: JobSettings) -> int:
    """SQS_VISIBILITY_TIMEOUT_S, or by default the job time limit + a margin; checked."""
    time_limit_s = jobs.time_limit_ms / 1000
    visibility = broker.sqs_visibility_timeout_s
    if visibility is None:
        return math.ceil(time_limit_s) + SQS_VISIBILITY_MARGIN_S
    if visibility <= time_limit_s:
        raise ConfigError(
            f"SQS_VISIBILITY_TIMEOUT_S={visibility} must exceed the job time limit "
            f"({time_limit_s:g} s, JOB_TIME_LIMIT_MS): otherwise SQS hands a running "
            "job's message to a second worker"
        )
    if visibility > 12 * 3600:
        raise ConfigError("SQS_VISIBILITY_TIMEOUT_S cannot exceed 43200 (12 hours)")
    return visibility


@dataclass(frozen=True)
class Settings:
    """Everything the API and the workers are configured with."""

    database: DatabaseSettings
    broker: BrokerSettings
    jobs: JobSettings
    api: ApiSettings
    log: LogSettings
    deploy: DeploySettings = field(default_factory=DeploySettings)

    def __post_init__(self) -> None:
        if self.deploy.is_production:
            if self.api.faults:
                raise ConfigError("TASKOVERFLOW_FAULTS is for tests and refused in production")
            if not self.database.url.startswith("postgresql"):
                raise ConfigError("TASKOVERFLOW_ENV=production needs a Postgres DATABASE_URL")
            if self.broker.is_in_memory:
                raise ConfigError(
                    "TASKOVERFLOW_ENV=production needs a redis:// or sqs:// BROKER_URL"
                )
        if self.broker.is_sqs:
            # Settled once here, so the broker, the queue creation and Terraform's mirror of
            # this rule all see the same number.
            object.__setattr__(
                self.broker,
                "sqs_visibility_timeout_s",
                sqs_visibility_timeout_s(self.broker, self.jobs),
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        return cls(
            database=DatabaseSettings.from_env(environ),
            broker=BrokerSettings.from_env(environ),
            jobs=JobSettings.from_env(environ),
            api=ApiSettings.from_env(environ),
            log=LogSettings.from_env(environ),
            deploy=DeploySettings.from_env(environ),
        )

    @staticmethod
    def env_names() -> list[str]:
        """Every environment variable the settings read (for docs and config checks)."""
        groups = (
            DatabaseSettings,
            BrokerSettings,
            JobSettings,
            ApiSettings,
            LogSettings,
            DeploySettings,
        )
        return [name for group in groups for name in group.env_names()]

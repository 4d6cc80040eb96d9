"""Typed settings, read once from the environment by each entry point and passed down.

This module is the only reader of the environment: the API, the worker launcher
(``python -m workers``), the worker processes (``workers.main``), the zero-setup run and
the migrations all get their configuration from here, so every variable is parsed,
defaulted and refused in one place, with an error naming it. Every field names the
environment variable it comes from and says what it is for; the README's configuration
table is this file in prose. Nothing here runs at import time.

Settings objects are frozen and final when built: ``from_env`` computes every derived value
(the driver in DATABASE_URL, the password moved out of it, the SQS visibility timeout)
before the object exists, and ``__post_init__`` only checks.

Secrets: no password is ever part of a string a log line, a repr or an error can show.
``DatabaseSettings.url`` never holds one (``from_env`` moves it to ``password``), reprs hide
secret fields and passwords in URLs, and errors name variables without echoing URLs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Self, get_type_hints
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
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


class MissingInProduction(ConfigError):
    """The zero-setup run under TASKOVERFLOW_ENV=production without its services' URLs."""


def env(name: str, doc: str, default: Any = dataclasses.MISSING, *, secret: bool = False) -> Any:
    """Declare a settings field read from environment variable ``name``; a ``secret`` one
    is never shown (repr)."""
    return field(default=default, metadata={"env": name, "doc": doc, "secret": secret})


#: ``scheme://user:`` and everything up to the last ``@`` (the password, however written).
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:).*@", re.DOTALL)

#: A ``password=`` query parameter (redis-py and libpq accept one).
_QUERY_PASSWORD = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password (``user:password@``, ``?password=``) replaced by ``***``,
    for logs and errors; otherwise unchanged. What does not parse as a URL is hidden whole."""
    try:
        urlsplit(url)
    except ValueError:
        return "***"
    # Everything from the user's colon to the last "@": a password written raw may hold
    # "/", "?" or "#", which end a URL's authority for a parser (over-hiding is harmless).
    url = _USERINFO_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


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
    """Build a settings group from a mapping of environment variables.

    Groups are declared ``repr=False`` so that every one uses this class's ``__repr__``,
    which never shows a secret field or a password inside a URL.
    """

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        return cls(**cls._values_from_env(environ))

    @classmethod
    def _values_from_env(cls, environ: Mapping[str, str]) -> dict[str, Any]:
        """The fields' values as given (set variables only); groups that derive values
        from them adjust this before constructing."""
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = f.metadata["env"]
            if name in environ:
                values[f.name] = _parse(name, environ[name], hints[f.name])
            elif f.default is dataclasses.MISSING:
                raise ConfigError(f"{name} is not set: {f.metadata['doc']}")
        return values

    @classmethod
    def env_names(cls) -> list[str]:
        return [f.metadata["env"] for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata["secret"] and value is not None:
                value = "***"
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class DatabaseSettings(_FromEnv):
    #: Never holds a password: ``from_env`` moves one written in DATABASE_URL to
    #: ``password``, so the URL can be logged and shown in errors as it is.
    url: str = env(
        "DATABASE_URL",
        "SQLAlchemy URL of the Postgres database, e.g. postgresql://user@host:5432/taskoverflow",
    )
    password: str | None = env(
        "DB_PASSWORD",
        "password for DATABASE_URL's user, kept out of the URL; overrides any password in the URL",
        None,
        secret=True,
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        values = cls._values_from_env(environ)
        url = normalise_database_url(values["url"])
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError("DATABASE_URL is not a valid database URL") from None
        # libpq also takes the password as a query parameter (?password=...).
        in_query = parsed.query.get("password")
        if parsed.password is not None or in_query is not None:
            # Out of the URL, into the one field nothing shows: engines hand the password
            # to the driver per connection (models.credentials), so no URL string can leak
            # it or go stale. DB_PASSWORD, when set, wins over the URL's.
            bare = URL.create(
                parsed.drivername,
                username=parsed.username,
                host=parsed.host,
                port=parsed.port,
                database=parsed.database,
                query={k: v for k, v in parsed.query.items() if k != "password"},
            )
            url = bare.render_as_string(hide_password=False)
            if parsed.password is not None:
                password = str(parsed.password)
            elif isinstance(in_query, str):
                password = in_query
            else:  # a repeated parameter: libpq takes the last
                password = (in_query or ("",))[-1]
            if values.get("password") is None:
                values["password"] = password
        return cls(**{**values, "url": url})

    def __post_init__(self) -> None:
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise ConfigError("DATABASE_URL is not a valid database URL") from None
        if parsed.password is not None:
            raise ConfigError(
                "DatabaseSettings.url must not hold the password (DatabaseSettings.from_env "
                "moves it to DB_PASSWORD's field)"
            )
        sslmode = parsed.query.get("sslmode")
        if sslmode is not None and sslmode not in SSL_MODES:
            raise ConfigError(f"DATABASE_URL: sslmode must be one of {sorted(SSL_MODES)}")
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


@dataclass(frozen=True, repr=False)
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
            raise ConfigError(
                f"BROKER_URL must be a redis:// or sqs:// URL, not {redact_url(self.url)!r}"
            )
        if not 0 <= self.sqs_wait_time_s <= 20:
            raise ConfigError("SQS_WAIT_TIME_S must be between 0 and 20 (SQS's long-poll cap)")
        if self.sqs_max_receive_count < 1:
            raise ConfigError("SQS_MAX_RECEIVE_COUNT must be at least 1")
        if not 1 <= self.redis_maintenance_chance <= 1_000_000:
            raise ConfigError("REDIS_MAINTENANCE_CHANCE must be between 1 and 1000000")


@dataclass(frozen=True, repr=False)
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
    result_ttl_s: int = env(
        "JOB_RESULT_TTL_S",
        "a finished job's result is served this long after it finishes, then 410 Gone "
        "(default one day: the course's Celery kept results as long)",
        86_400,
    )
    record_ttl_s: int = env(
        "JOB_RECORD_TTL_S",
        "a finished job's record (state, timings, error) is deleted this long after it "
        "finishes (default 30 days of history; at least JOB_RESULT_TTL_S)",
        30 * 86_400,
    )
    idempotency_key_ttl_s: int = env(
        "IDEMPOTENCY_KEY_TTL_S",
        "how long a POST's Idempotency-Key is remembered (at least one day)",
        86_400,
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
        if not 1 <= self.result_ttl_s <= self.record_ttl_s:
            raise ConfigError(
                "JOB_RESULT_TTL_S must be at least 1 and at most JOB_RECORD_TTL_S (a result "
                "cannot outlive its job's record)"
            )
        if self.idempotency_key_ttl_s < 86_400:
            raise ConfigError(
                "IDEMPOTENCY_KEY_TTL_S must be at least 86400: clients may retry a request "
                "for up to a day (draft-ietf-httpapi-idempotency-key-header)"
            )

    @property
    def result_ttl(self) -> timedelta:
        return timedelta(seconds=self.result_ttl_s)

    @property
    def stale_after_s(self) -> float:
        """A STARTED/RETRY job untouched this long has lost its worker or its message."""
        return self.time_limit_ms / 1000 + self.max_backoff_ms / 1000 + self.pending_grace_s


@dataclass(frozen=True, repr=False)
class ApiSettings(_FromEnv):
    max_body_bytes: int = env(
        "API_MAX_BODY_BYTES", "larger request bodies are refused with 413", 16_384
    )
    public_base_url: str | None = env(
        "PUBLIC_BASE_URL",
        "scheme://host[:port] used in task_url/result_url; unset: taken from the request",
        None,
    )
    metrics: bool = env(
        "API_METRICS",
        "serve Prometheus /metrics on the API's port (for a scraper in the same network); "
        "the ECS task turns it off: its port is behind a public load balancer",
        True,
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


#: RATE_LIMIT_STORE's named stores (besides a redis:// URL).
RATE_LIMIT_STORES = ("memory", "postgres")


@dataclass(frozen=True, repr=False)
class LimitSettings(_FromEnv):
    """What one client, or all of them, may make the service hold and do (docs/RELIABILITY.md,
    "Limits"). Every refusal names its limit and says when or how to try again."""

    todos_max: int = env(
        "TODOS_MAX",
        "most todos the service holds; creating one more is 409 until some are deleted",
        1_000_000,
    )
    calendar_max_events: int = env(
        "CALENDAR_MAX_EVENTS",
        "most events one calendar export may hold: a submission over it is 422, and a job "
        "that finds more todos than this when it runs fails with that reason",
        1_000_000,
    )
    jobs_max_unfinished: int = env(
        "JOBS_MAX_UNFINISHED",
        "backpressure: with this many jobs PENDING, STARTED or RETRY, new jobs are 503 with "
        "Retry-After before anything is queued (Terraform sets it from the worker capacity "
        "it scales to)",
        1_000,
    )
    jobs_max_unfinished_per_client: int = env(
        "JOBS_MAX_UNFINISHED_PER_CLIENT",
        "one client's unfinished jobs at most; another is 429 with Retry-After",
        50,
    )
    backlog_retry_after_s: int = env(
        "BACKLOG_RETRY_AFTER_S",
        "Retry-After of the backpressure and per-client job answers",
        10,
    )
    rate_limit_reads: int = env(
        "RATE_LIMIT_READS_PER_MINUTE",
        "GET/HEAD requests per client per minute (bursts up to the minute's worth); 0: no limit",
        6_000,
    )
    rate_limit_writes: int = env(
        "RATE_LIMIT_WRITES_PER_MINUTE",
        "other requests (creating, changing, submitting) per client per minute (bursts up to "
        "the minute's worth); 0: no limit",
        1_200,
    )
    rate_limit_store: str | None = env(
        "RATE_LIMIT_STORE",
        "where API processes count requests, so the limit holds across them: a redis:// URL, "
        "postgres (the DATABASE_URL database: what ECS uses) or memory (this process only); "
        "unset: the broker's Redis, else postgres, else memory",
        None,
    )

    def __post_init__(self) -> None:
        for name, value in (
            ("TODOS_MAX", self.todos_max),
            ("CALENDAR_MAX_EVENTS", self.calendar_max_events),
            ("JOBS_MAX_UNFINISHED", self.jobs_max_unfinished),
            ("JOBS_MAX_UNFINISHED_PER_CLIENT", self.jobs_max_unfinished_per_client),
            ("BACKLOG_RETRY_AFTER_S", self.backlog_retry_after_s),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if self.rate_limit_reads < 0 or self.rate_limit_writes < 0:
            raise ConfigError("RATE_LIMIT_*_PER_MINUTE must not be negative (0: no limit)")
        store = self.rate_limit_store
        redis = ("redis://", "rediss://", "unix://")
        if store is not None and store not in RATE_LIMIT_STORES and not store.startswith(redis):
            raise ConfigError(
                "RATE_LIMIT_STORE must be a redis:// URL, postgres or memory, not "
                f"{redact_url(store)!r}"
            )

    @property
    def rate_limited(self) -> bool:
        return bool(self.rate_limit_reads or self.rate_limit_writes)


#: ``name:sha256hex``, one accepted API key (api.keys makes them).
_KEY_ENTRY = re.compile(r"([A-Za-z0-9._-]{1,64}):([0-9a-f]{64})")


def parse_api_key_hashes(text: str, source: str) -> dict[str, str]:
    """``{sha256 hex: name}`` from ``name:sha256hex`` entries separated by commas, spaces or
    newlines (API_KEYS, or the secret API_KEYS_SECRET_ARN names)."""
    hashes: dict[str, str] = {}
    for entry in re.split(r"[\s,]+", text.strip()):
        if not entry:
            continue
        match = _KEY_ENTRY.fullmatch(entry)
        if match is None:
            # Never echo the entry: it could be a key pasted in place of its hash.
            raise ConfigError(
                f"{source}: every entry must be name:sha256hex (python -m api.keys new NAME "
                "makes one)"
            )
        hashes[match.group(2)] = match.group(1)
    return hashes


@dataclass(frozen=True, repr=False)
class AccessSettings(_FromEnv):
    """Who may call the API and from where: API keys, the proxies whose X-Forwarded-For is
    believed, CORS."""

    api_keys: str | None = env(
        "API_KEYS",
        "accepted API keys as name:sha256hex entries (hashes only; python -m api.keys new "
        "NAME makes a key and its entry); set: writes and job endpoints need "
        "Authorization: Bearer <key>; unset: no keys (the course contract)",
        None,
        secret=True,
    )
    api_keys_secret_arn: str | None = env(
        "API_KEYS_SECRET_ARN",
        "Secrets Manager secret holding the API_KEYS entries, read at start and every "
        "API_KEYS_REFRESH_S, so keys rotate without a restart (ECS); overrides API_KEYS",
        None,
    )
    api_keys_refresh_s: int = env(
        "API_KEYS_REFRESH_S", "how often API_KEYS_SECRET_ARN is read again", 60
    )
    trusted_proxies: str | None = env(
        "TRUSTED_PROXIES",
        "CIDR ranges of the proxies (load balancers) in front of the API: only a request from "
        "one of them has its client address taken from X-Forwarded-For (and its scheme from "
        "X-Forwarded-Proto); unset: the connection's own address, always",
        None,
    )
    cors_allow_origins: str | None = env(
        "CORS_ALLOW_ORIGINS",
        "origins (scheme://host[:port], comma-separated) whose pages may call the API from a "
        "browser; unset: none (the page is served from the API's own origin)",
        None,
    )

    def __post_init__(self) -> None:
        if self.api_keys is not None:
            parse_api_key_hashes(self.api_keys, "API_KEYS")
        arn = self.api_keys_secret_arn
        if arn is not None and not arn.startswith("arn:"):
            raise ConfigError("API_KEYS_SECRET_ARN must be a secret's ARN (arn:aws:...)")
        if self.api_keys_refresh_s < 1:
            raise ConfigError("API_KEYS_REFRESH_S must be at least 1")
        _ = self.proxy_networks  # refuses what is not a CIDR range
        for origin in self.cors_origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(
                    f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
                )

    @property
    def keys_required(self) -> bool:
        return self.api_keys is not None or self.api_keys_secret_arn is not None

    @property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        try:
            return tuple(
                ip_network(part, strict=False)
                for part in re.split(r"[\s,]+", (self.trusted_proxies or "").strip())
                if part
            )
        except ValueError as exc:
            raise ConfigError(f"TRUSTED_PROXIES: {exc}") from None

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return tuple(
            o.rstrip("/") for o in re.split(r"[\s,]+", (self.cors_allow_origins or "").strip()) if o
        )


@dataclass(frozen=True, repr=False)
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


@dataclass(frozen=True, repr=False)
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


@dataclass(frozen=True, repr=False)
class WorkerSettings(_FromEnv):
    processes: int = env(
        "WORKER_PROCESSES",
        "worker processes `python -m workers` starts (never Dramatiq's one per CPU)",
        1,
    )
    threads: int = env(
        "DRAMATIQ_THREADS",
        "worker threads per process; each process's connection pool is sized to match",
        8,
    )
    shutdown_timeout_ms: int = env(
        "WORKER_SHUTDOWN_TIMEOUT_MS",
        "on SIGTERM, running jobs get this long before they are handed back to the queue; "
        "keep it below the container's stop timeout",
        25_000,
    )

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ConfigError(f"WORKER_PROCESSES must be at least 1, not {self.processes}")
        if self.threads < 1:
            raise ConfigError(f"DRAMATIQ_THREADS must be at least 1, not {self.threads}")
        if self.shutdown_timeout_ms < 0:
            raise ConfigError("WORKER_SHUTDOWN_TIMEOUT_MS must not be negative")


@dataclass(frozen=True, repr=False)
class TelemetrySettings(_FromEnv):
    """Metrics and traces. Trace ids are always made, carried and logged; spans are only
    recorded and exported when an OTLP endpoint is set."""

    otlp_endpoint: str | None = env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/HTTP collector traces are exported to (e.g. http://127.0.0.1:4318); unset: "
        "spans are neither recorded nor exported, trace ids still travel with each job",
        None,
    )
    service_name: str | None = env(
        "OTEL_SERVICE_NAME",
        "service name on exported spans; default taskoverflow-api or taskoverflow-worker",
        None,
    )
    worker_metrics_host: str = env(
        "WORKER_METRICS_HOST",
        "address the worker pool's Prometheus /metrics listens on (0.0.0.0 in containers)",
        "127.0.0.1",
    )
    worker_metrics_port: int = env(
        "WORKER_METRICS_PORT",
        "port of the worker pool's Prometheus /metrics (one endpoint for all its "
        "processes); 0: none",
        9191,
    )
    metrics_emf: bool = env(
        "METRICS_EMF",
        "workers also write each job's metrics as a CloudWatch Embedded Metric Format log "
        "line (on AWS: CloudWatch turns them into metrics, no agent needed)",
        False,
    )
    metrics_namespace: str = env(
        "METRICS_NAMESPACE",
        "CloudWatch namespace of the workers' EMF metrics (Terraform: TaskOverflow/<name>)",
        "TaskOverflow",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.worker_metrics_port <= 65535:
            raise ConfigError(
                f"WORKER_METRICS_PORT must be between 0 and 65535, not {self.worker_metrics_port}"
            )
        if self.otlp_endpoint is not None and not self.otlp_endpoint.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL (OTLP/HTTP), "
                f"not {self.otlp_endpoint!r}"
            )


@dataclass(frozen=True, repr=False)
class ZeroSetupSettings(_FromEnv):
    port: int = env(
        "PORT", "zero-setup run (`make run`): port of the page and the API on 127.0.0.1", 6400
    )
    data_dir: str | None = env(
        "TASKOVERFLOW_DATA_DIR",
        "zero-setup run: directory of its SQLite file (taskoverflow.sqlite3) when "
        "DATABASE_URL is unset; default the current directory",
        None,
    )

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"PORT must be between 1 and 65535, not {self.port}")

    @property
    def database_url(self) -> str:
        """The SQLite file the zero-setup run uses when DATABASE_URL is unset."""
        return f"sqlite:///{Path(self.data_dir or '.').resolve() / 'taskoverflow.sqlite3'}"


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
    """Everything the API, the workers and the zero-setup run are configured with."""

    database: DatabaseSettings
    broker: BrokerSettings
    jobs: JobSettings
    api: ApiSettings
    log: LogSettings
    deploy: DeploySettings = field(default_factory=DeploySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    zero_setup: ZeroSetupSettings = field(default_factory=ZeroSetupSettings)

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
            if self.limits.rate_limit_store == "memory":
                raise ConfigError(
                    "RATE_LIMIT_STORE=memory is refused in production: each API process would "
                    "count alone, multiplying every limit by the number of processes"
                )
        if self.rate_limit_store == "postgres" and not self.database.url.startswith("postgresql"):
            raise ConfigError("RATE_LIMIT_STORE=postgres needs a Postgres DATABASE_URL")
        if self.broker.is_sqs:
            if self.broker.sqs_visibility_timeout_s is None:
                raise ConfigError("SQS_VISIBILITY_TIMEOUT_S must be settled: use from_env")
            sqs_visibility_timeout_s(self.broker, self.jobs)  # refuses a value SQS would misuse

    @property
    def rate_limit_store(self) -> str:
        """Where the rate limits count: RATE_LIMIT_STORE, or unset the broker's Redis (every
        API process of a Redis deployment reaches it), else postgres (an SQS deployment's
        shared store), else memory (the single-process run on SQLite)."""
        if self.limits.rate_limit_store is not None:
            return self.limits.rate_limit_store
        if self.broker.url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker.url
        return "postgres" if self.database.url.startswith("postgresql") else "memory"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        broker = BrokerSettings.from_env(environ)
        jobs = JobSettings.from_env(environ)
        if broker.is_sqs:
            # Settled once here, so the broker, the queue creation and Terraform's mirror of
            # this rule all see the same number.
            broker = dataclasses.replace(
                broker, sqs_visibility_timeout_s=sqs_visibility_timeout_s(broker, jobs)
            )
        return cls(
            database=DatabaseSettings.from_env(environ),
            broker=broker,
            jobs=jobs,
            api=ApiSettings.from_env(environ),
            log=LogSettings.from_env(environ),
            deploy=DeploySettings.from_env(environ),
            worker=WorkerSettings.from_env(environ),
            telemetry=TelemetrySettings.from_env(environ),
            limits=LimitSettings.from_env(environ),
            access=AccessSettings.from_env(environ),
            zero_setup=ZeroSetupSettings.from_env(environ),
        )

    @classmethod
    def for_zero_setup(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The single-process run's settings (ops/dev/standalone.py): DATABASE_URL and
        BROKER_URL, when unset, fall back to a SQLite file in TASKOVERFLOW_DATA_DIR and the
        in-memory broker, except under TASKOVERFLOW_ENV=production."""
        environ = os.environ if environ is None else environ
        if DeploySettings.from_env(environ).is_production:
            missing = [v for v in ("DATABASE_URL", "BROKER_URL") if not environ.get(v)]
            if missing:
                raise MissingInProduction(
                    f"{' and '.join(missing)} not set, and TASKOVERFLOW_ENV=production never "
                    "falls back to SQLite or the in-memory broker"
                )
        fallback = {
            "DATABASE_URL": ZeroSetupSettings.from_env(environ).database_url,
            "BROKER_URL": "memory://",
        }
        return cls.from_env({**fallback, **environ})

    @staticmethod
    def env_names() -> list[str]:
        """Every environment variable the settings read (for docs and config checks)."""
        hints = get_type_hints(Settings)
        groups: list[type[_FromEnv]] = [hints[f.name] for f in dataclasses.fields(Settings)]
        return [name for group in groups for name in group.env_names()]

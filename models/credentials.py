"""The database password, and how every engine gets it at connect time.

Three sources, first match wins: ``DB_PASSWORD_SECRET_ARN`` (a Secrets Manager secret, as
on ECS, where RDS keeps and rotates the master password), ``DB_PASSWORD``, or the password
written in ``DATABASE_URL``. The password never becomes part of a URL string: engines are
built from the bare URL and ``use_password`` hands the password to the driver for each new
connection.

Rotation: a secret is read once and cached. When the database refuses the cached password
(SQLSTATE 28P01), the secret is read again and the connection retried with the new value, so
new connections keep working after a rotation with no restart; connections already open are
unaffected (Postgres checks the password only when a connection starts). A re-read that
finds the same password holds off the next for ``REFRESH_INTERVAL_S``, so a password that is
really wrong costs one Secrets Manager call per interval, not one per connection attempt.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import Engine, event

log = structlog.get_logger("database")

#: After a re-read found the same password, refusals in the next this many seconds do not
#: read the secret again.
REFRESH_INTERVAL_S = 5.0

#: SQLSTATE invalid_password: the server refused the password itself (not the host, the user
#: or the database), which is what a rotation looks like to a client holding the old one.
INVALID_PASSWORD_SQLSTATE = "28P01"  # noqa: S105 (an error code, not a password)


def read_secret_string(secret_arn: str) -> str:
    """The text of Secrets Manager secret ``secret_arn``, from the ARN's own region (the
    endpoint is boto3's usual one: AWS_ENDPOINT_URL points it elsewhere, e.g. at moto)."""
    import boto3  # only processes configured with a secret load boto3

    parts = secret_arn.split(":")
    region = parts[3] if len(parts) > 3 and parts[0] == "arn" else None
    client = boto3.client("secretsmanager", region_name=region)
    return str(client.get_secret_value(SecretId=secret_arn)["SecretString"])


def read_secret_password(secret_arn: str) -> str:
    """The ``password`` field of a JSON secret (the RDS-managed form), or the whole string.

    The region is the ARN's own (arn:aws:secretsmanager:<region>:...); the endpoint is
    boto3's usual one (AWS_ENDPOINT_URL points it elsewhere, e.g. at a local moto server).
    """
    value = read_secret_string(secret_arn)
    try:
        document = json.loads(value)
    except ValueError:
        return str(value)
    if isinstance(document, dict) and "password" in document:
        return str(document["password"])
    return str(value)


class DatabasePassword:
    """The current password for new connections; thread-safe.

    ``fixed``: a password that never changes (DB_PASSWORD), or None to leave the driver
    whatever DATABASE_URL says.
    ``read``: a function returning the password from its store (the secret); when given,
    it is called on first use and again after the database refuses the password.
    """

    def __init__(
        self,
        fixed: str | None = None,
        read: Callable[[], str] | None = None,
        *,
        refresh_interval_s: float = REFRESH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._value = fixed
        self._read = read
        self._interval = refresh_interval_s
        self._clock = clock
        self._loaded = read is None
        # When a re-read last found the same password: until the interval has passed, more
        # refusals do not read again (the password is wrong, or the rotation is half done).
        self._unchanged_at: float | None = None
        self._lock = threading.Lock()

    def current(self) -> str | None:
        if not self._loaded:
            with self._lock:
                if not self._loaded and self._read is not None:
                    self._value = self._read()
                    self._loaded = True
        return self._value

    def refresh(self) -> bool:
        """Read the store again after a refusal; True if that gave a different password."""
        if self._read is None:
            return False
        with self._lock:
            now = self._clock()
            if self._unchanged_at is not None and now - self._unchanged_at < self._interval:
                return False
            value = self._read()
            changed = value != self._value
            self._value = value
            self._loaded = True
            self._unchanged_at = None if changed else now
        if changed:
            log.info("database password read again from its secret")
        return changed


def is_invalid_password(exc: BaseException) -> bool:
    """Did the server refuse the password? (asyncpg sets ``sqlstate``; psycopg2 has no code
    for errors raised while connecting, only libpq's message.)"""
    if getattr(exc, "sqlstate", None) == INVALID_PASSWORD_SQLSTATE:
        return True
    if getattr(exc, "pgcode", None) == INVALID_PASSWORD_SQLSTATE:
        return True
    return "password authentication failed" in str(exc)


def use_password(engine: Engine, password: DatabasePassword) -> None:
    """Give each new connection of ``engine`` (a sync engine, or an async engine's
    ``sync_engine``) the current password, re-reading it once if the server refuses it."""

    @event.listens_for(engine, "do_connect")
    def connect_with_password(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        value = password.current()
        if value is not None:
            cparams["password"] = value
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            if not is_invalid_password(exc):
                raise
            password.refresh()  # may be spaced out; another thread may have refreshed it
            fresh = password.current()
            if fresh == value:
                raise
            log.info("database refused the password: retrying with the secret's new value")
            cparams["password"] = fresh
            return dialect.connect(*cargs, **cparams)

"""models.credentials: the password a new connection gets, and when it is read again."""

from __future__ import annotations

import pytest

from models.credentials import DatabasePassword, is_invalid_password


class Store:
    """A secret store whose value the test rotates; counts reads."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0

    def read(self) -> str:
        self.reads += 1
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read_once(secret: str) -> tuple[Store, Clock, DatabasePassword]:
    """A password read from ``Store(secret)`` at time 0, to be read again at most every 5 s."""
    store, clock = Store(secret), Clock()
    password = DatabasePassword(read=store.read, refresh_interval_s=5, clock=clock)
    assert password.current() == secret
    return store, clock, password


def test_a_secret_is_read_once_then_cached():
    store = Store("first")
    password = DatabasePassword(read=store.read)
    assert password.current() == "first"
    assert password.current() == "first"
    assert store.reads == 1


def test_a_refusal_reads_the_rotated_secret_at_once():
    """Even right after the first read: a rotation can come at any moment."""
    store, clock, password = read_once("first")
    store.value = "second"  # rotated a moment later
    clock.now = 0.1
    assert password.refresh() is True
    assert password.current() == "second"
    assert store.reads == 2


def test_a_password_that_stays_wrong_is_read_once_per_interval():
    store, clock, password = read_once("wrong")
    for now in (1, 2, 3):  # refused again and again: one re-read, then none for 5 s
        clock.now = now
        assert password.refresh() is False
    assert store.reads == 2
    clock.now = 6.5
    password.refresh()
    assert store.reads == 3


def test_a_fixed_password_never_changes():
    password = DatabasePassword(fixed="static")
    assert password.refresh() is False
    assert password.current() == "static"


class Refused(Exception):
    def __init__(self, message: str, sqlstate: str | None = None, pgcode: str | None = None):
        super().__init__(message)
        self.sqlstate, self.pgcode = sqlstate, pgcode


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Refused("x", sqlstate="28P01"), True),  # asyncpg
        (Refused('FATAL:  password authentication failed for user "app"'), True),  # psycopg2
        (Refused("could not connect to server"), False),
        (Refused("x", sqlstate="28000"), False),  # no pg_hba entry: a new password won't help
    ],
)
def test_only_a_refused_password_counts_as_one(exc: Exception, expected: bool):
    assert is_invalid_password(exc) is expected

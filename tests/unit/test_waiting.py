"""tests.waiting.wait_for: the one poll loop every wait in the suite goes through."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.waiting import WaitTimeout, wait_for


def test_returns_the_first_value_that_satisfies_the_condition():
    counter = itertools.count()
    assert wait_for(lambda: next(counter), lambda n: n >= 3, timeout=5, what="3", interval=0) == 3


def test_a_timeout_names_what_and_the_last_value_seen():
    """TimeoutError (so any handler of timeouts sees it), with what and the last state."""
    counter = itertools.count()
    began = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        wait_for(lambda: next(counter), lambda n: n < 0, timeout=0.2, what="a negative number")
    assert 0.2 <= time.monotonic() - began < 2
    assert isinstance(caught.value, WaitTimeout)
    assert caught.value.last == next(counter) - 1
    assert str(caught.value) == (
        f"timed out after 0.2 s waiting for a negative number; last seen: {caught.value.last}"
    )


def test_the_probe_runs_once_more_at_the_deadline():
    """A condition met while the wait slept is still seen: no false timeout."""
    began = time.monotonic()
    assert wait_for(lambda: time.monotonic() - began >= 0.3, timeout=0.3, what="0.3 s", interval=10)


def test_an_exception_from_the_probe_ends_the_wait_at_once():
    """A probe raises to say "never" (a process that exited): no waiting out the timeout."""

    def exited() -> bool:
        raise RuntimeError("worker exited early")

    began = time.monotonic()
    with pytest.raises(RuntimeError, match="worker exited early"):
        wait_for(exited, timeout=30, what="the worker")
    assert time.monotonic() - began < 1


def test_details_are_added_and_a_huge_last_value_is_cut():
    with pytest.raises(WaitTimeout) as caught:
        wait_for(lambda: "x" * 10_000, lambda _: False, timeout=0, what="y", details=lambda: "LOG")
    message = str(caught.value)
    assert len(message) < 2_200
    assert "... (10002 characters)" in message
    assert message.endswith("\nLOG")

"""The suite fails fast and clearly, instead of hanging, when a service is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.services import ROOT


@pytest.mark.parametrize(
    ("variable", "url", "message"),
    [
        (
            "TEST_POSTGRES_URL",
            "postgresql://postgres@127.0.0.1:9/postgres",
            "Postgres is unreachable at 127.0.0.1:9",
        ),
        ("TEST_REDIS_URL", "redis://127.0.0.1:9/0", "Redis is unreachable at 127.0.0.1:9"),
    ],
)
def test_unreachable_service_fails_the_run_quickly_with_its_address(
    variable: str, url: str, message: str
):
    """A test needing a service that is down errors within seconds, naming host and port."""
    # The check must fail fast rather than hang on an unreachable service: the timeout is
    # the guard (a hang guard, not a speed figure).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_calendar_jobs_api.py::test_result_before_success_is_404_not_finished",
        ],
        cwd=ROOT,
        env={**os.environ, variable: url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stdout

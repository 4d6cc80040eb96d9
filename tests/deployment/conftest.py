"""Fixtures of the deployment tests: podman, ready to build on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.services import ROOT


@pytest.fixture(scope="session")
def base_image() -> str:
    """A base image for our Dockerfiles; installs podman and runc first where missing
    (ops/images/base-image.sh), so these tests run on a fresh machine too."""
    done = subprocess.run(
        [str(Path(ROOT, "ops", "images", "base-image.sh"))],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]

"""Fixtures of the deployment tests: podman, ready to build on this machine."""

from __future__ import annotations

import pytest

from tests.deployment import podman


@pytest.fixture(scope="session")
def base_image() -> str:
    """A base image for our Dockerfiles; podman and runc installed first where missing."""
    return podman.base_image()

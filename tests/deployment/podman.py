"""What every deployment test needs of podman: one way to call it, a base image, logs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.services import ROOT

#: crun fails on this kind of machine's cgroups; runc works.
PODMAN = ("podman", "--runtime", "runc")
#: A first run builds the base image with debootstrap (minutes).
BASE_IMAGE_TIMEOUT_S = 1200


class DeploymentFailure(AssertionError):
    """What was deployed did not come up, or behave, as it must."""


def podman(*args: str, timeout: float = 60, check: bool = True) -> str:
    """podman's standard output; with ``check``, a failure raises with its stderr."""
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise DeploymentFailure(f"podman {' '.join(args[:3])}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def logs(container: str, tail: int = 30) -> str:
    """A container's last lines, its stdout and stderr together (as CloudWatch has them)."""
    done = subprocess.run(
        [*PODMAN, "logs", "--tail", str(tail), container],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip()


def base_image() -> str:
    """A base image for our Dockerfiles (ops/images/base-image.sh, which also installs podman
    and runc where missing, so these tests run on a fresh machine)."""
    done = subprocess.run(
        [str(Path(ROOT, "ops", "images", "base-image.sh"))],
        capture_output=True,
        text=True,
        timeout=BASE_IMAGE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise DeploymentFailure(f"ops/images/base-image.sh failed: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]

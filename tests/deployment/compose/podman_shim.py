"""`podman`, as podman-compose (>= 1.3) drives it, on a podman older than 4.6 without systemd.

podman-compose is pointed at this file with ``--podman-path`` by tests/deployment/test_compose.py.
Every call goes through to the real podman with ``--runtime runc`` (crun does not work in this
sandbox) and is left alone, except for two gaps of podman < 4.6 that would otherwise make
podman-compose run compose.yaml with different semantics than Docker Compose:

* ``depends_on: {condition: service_healthy}``: podman-compose implements it with
  ``podman wait --condition=healthy``, which podman 4.6 added; on an older podman it logs
  "Ignored ... condition check" and starts the dependent at once. Here ``--version`` reports
  4.6.0 when the real podman is older, and ``wait --condition=healthy`` is emulated by polling
  ``podman inspect`` for the containers' health status. The health checks themselves are run by
  the test (podman schedules them with systemd timers, which do not exist here).
* ``podman create --requires=<deps>``, which podman-compose adds for every dependency: podman
  4.3 cannot start a container whose required container has exited and has requirements of its
  own ("generating dependency graph ... not found in input list"), which is exactly ``api`` ->
  ``migrate`` (exited 0) -> ``postgres``. The flag is dropped: podman-compose orders the starts
  itself, by ``depends_on``, before it starts each container.

On podman >= 4.6 this is a plain pass-through that only adds ``--runtime``.
Environment: PODMAN_SHIM_REAL (the real podman, default: `podman` on PATH),
PODMAN_SHIM_RUNTIME (default: runc).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

EMULATED_VERSION = "4.6.0"
POLL_S = 0.5


def _real_podman() -> list[str]:
    real = os.environ.get("PODMAN_SHIM_REAL") or shutil.which("podman")
    if not real:
        sys.exit("podman-shim: no podman on PATH")
    return [real, "--runtime", os.environ.get("PODMAN_SHIM_RUNTIME", "runc")]


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _real_version(podman: list[str]) -> str:
    out = subprocess.run([*podman, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def _wait_healthy(podman: list[str], args: list[str]) -> int:
    """`podman wait --condition=healthy [--ignore] NAME...` as podman 4.6 does it: return once
    every container is healthy; fail if one has stopped (or is missing, unless --ignore)."""
    ignore = "--ignore" in args
    names = [a for a in args if not a.startswith("-")]
    pending = set(names)
    while pending:
        for name in sorted(pending):
            res = subprocess.run(
                [
                    *podman,
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{.State.Health.Status}}",
                    name,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode != 0:
                if ignore:
                    pending.discard(name)
                    continue
                sys.stderr.write(res.stderr)
                return 125
            state, _, health = res.stdout.strip().partition(" ")
            if health == "healthy":
                pending.discard(name)
            elif state not in ("created", "configured", "initialized", "running"):
                sys.stderr.write(f"podman-shim: {name} is {state}, it will never be healthy\n")
                return 125
        if pending:
            time.sleep(POLL_S)
    for name in names:
        print(name)
    return 0


def main(argv: list[str]) -> int:
    podman = _real_podman()
    version = _real_version(podman)
    old = _version_tuple(version) < _version_tuple(EMULATED_VERSION)
    # podman-compose asks `podman --version ""` (an empty subcommand).
    if old and [a for a in argv if a] == ["--version"]:
        print(f"podman version {EMULATED_VERSION}")
        print(f"podman-shim: the real podman is {version}", file=sys.stderr)
        return 0
    if old and argv[:1] == ["wait"] and "--condition=healthy" in argv:
        return _wait_healthy(podman, [a for a in argv[1:] if a != "--condition=healthy"])
    if old and argv[:1] in (["create"], ["run"]):
        argv = [a for a in argv if not a.startswith("--requires=")]
    os.execv(podman[0], [*podman, *argv])  # noqa: S606 - our own fixed podman command line
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

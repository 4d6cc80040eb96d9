"""Drive compose.yaml with podman-compose on a machine without a registry or systemd.

Used by tests/deployment/test_compose.py. The pieces:

- ``standin_images``: the third-party images compose.yaml names, built locally
  (``*.Containerfile`` here) under the names compose.standins.yaml swaps in;
- ``Stack``: one podman-compose project (unique name) of compose.yaml + compose.standins.yaml,
  run through podman_shim.py (runc; podman < 4.6 gaps, see there), with a clean environment
  (no .env, no inherited values for compose.yaml's variables);
- ``HealthScheduler``: runs the containers' health checks every second, as podman's systemd
  timers would (there is no systemd here, so without it nothing ever turns healthy);
- ``Stack.leftovers``: what of the project is still there (containers, pods, networks,
  volumes); ``Stack.image_volumes``: the anonymous volumes of its containers' image VOLUMEs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.deployment.podman import PODMAN, DeploymentFailure, logs, podman
from tests.services import ROOT

HERE = Path(__file__).resolve().parent
REPO = Path(ROOT)
COMPOSE_FILE = REPO / "compose.yaml"
OVERRIDE = HERE / "compose.standins.yaml"
SHIM = HERE / "podman_shim.py"
#: The stand-in for each third-party service, built from <name>.Containerfile here.
CONTAINERFILES = {"postgres": "postgres", "redis": "redis", "sqs": "moto"}
#: podman-compose releases known to run compose.yaml (depends_on conditions, --scale).
MIN_PODMAN_COMPOSE = (1, 6, 0)
#: First runs build the stand-ins, the base image and our images: minutes, not seconds.
BUILD_TIMEOUT_S = 1200


def podman_compose() -> str:
    """The podman-compose next to this Python (the venv's), else the one on PATH."""
    exe = Path(sys.executable).with_name("podman-compose")
    path = str(exe) if exe.exists() else shutil.which("podman-compose")
    if path is None:
        raise DeploymentFailure("podman-compose is not installed (pip install podman-compose)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"podman-compose version (\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    version = tuple(int(part) for part in found.groups()) if found else (0, 0, 0)
    if version < MIN_PODMAN_COMPOSE:
        raise DeploymentFailure(
            f"{path} is podman-compose {'.'.join(map(str, version))}; need >= "
            f"{'.'.join(map(str, MIN_PODMAN_COMPOSE))} (Debian bookworm's 1.0.3 ignores "
            "depends_on conditions)"
        )
    return path


def standin_images(base: str, services: tuple[str, ...] = ("postgres", "redis", "sqs")) -> None:
    """Build the stand-ins compose.standins.yaml names (podman caches the layers)."""
    images = {
        name: svc["image"]
        for name, svc in yaml.safe_load(OVERRIDE.read_text())["services"].items()
        if "image" in svc
    }
    for service in services:
        podman(
            "build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
            "-f", str(HERE / f"{CONTAINERFILES[service]}.Containerfile"),
            "-t", images[service], str(HERE),
            timeout=BUILD_TIMEOUT_S,
        )  # fmt: skip


def parse_time(stamp: str) -> float:
    """podman's RFC 3339 timestamps (nanoseconds) as epoch seconds."""
    found = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if not found:
        raise ValueError(f"not a podman timestamp: {stamp!r}")
    whole, fraction, zone = found.groups()
    seconds = datetime.fromisoformat(whole + zone.replace("Z", "+00:00")).timestamp()
    return seconds + float(f"0.{fraction or 0}")


@dataclass
class Stack:
    """One podman-compose project of ``compose_file`` + compose.standins.yaml."""

    compose_file: Path
    project: str
    workdir: Path
    #: Values for compose.yaml's ${VARIABLES}; every other one it names is unset.
    variables: dict[str, str]
    #: Compose profiles to enable (``--profile``), e.g. ``sqs``.
    profiles: tuple[str, ...] = ()
    exe: str = field(default_factory=podman_compose)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        wrapper = self.workdir / "podman"
        # podman-compose execs --podman-path, so the shim needs an executable of its own.
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SHIM}" "$@"\n')
        wrapper.chmod(0o755)
        empty = self.workdir / "empty.env"
        empty.write_text("")
        self.argv = [
            self.exe, "--podman-path", str(wrapper), "--env-file", str(empty),
            "-p", self.project, "-f", str(self.compose_file), "-f", str(OVERRIDE),
            *(arg for profile in self.profiles for arg in ("--profile", profile)),
        ]  # fmt: skip
        named = set(re.findall(r"\$\{(\w+)", self.compose_file.read_text()))
        env = {
            k: v for k, v in os.environ.items() if k not in named and not k.startswith("COMPOSE_")
        }
        env.update(self.variables)
        env["PODMAN_SHIM_REAL"] = shutil.which("podman") or "podman"
        # Docker builds keep HEALTHCHECK, STOPSIGNAL etc.; podman's default OCI format drops them.
        env["BUILDAH_FORMAT"] = "docker"
        self.env = env
        self.log = self.workdir / "podman-compose.log"

    def compose(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run podman-compose; its output goes to self.log, and is returned."""
        with self.log.open("a") as log:
            log.write(f"\n$ podman-compose {' '.join(args)}\n")
        began = time.monotonic()
        try:
            done = subprocess.run(
                [*self.argv, *args],
                cwd=self.compose_file.parent,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentFailure(
                f"podman-compose {args[0]} did not finish in {timeout} s"
            ) from exc
        with self.log.open("a") as log:
            took = time.monotonic() - began
            log.write(done.stdout + done.stderr + f"(exit {done.returncode} in {took:.1f} s)\n")
        return done

    def containers(self) -> dict[str, dict[str, Any]]:
        """`podman inspect` of every container of the project, by name."""
        names = podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
            "--format", "{{.Names}}",
        ).split()  # fmt: skip
        if not names:
            return {}
        return {c["Name"]: c for c in json.loads(podman("inspect", *names))}

    def service(self, name: str) -> list[dict[str, Any]]:
        return sorted(
            (
                c
                for c in self.containers().values()
                if c["Config"]["Labels"].get("com.docker.compose.service") == name
            ),
            key=lambda c: c["Name"],
        )

    def logs(self, container: str, tail: int = 30) -> str:
        return logs(container, tail)

    def image_volumes(self) -> dict[str, str]:
        """The anonymous volumes podman made for the containers' image VOLUMEs: name -> path."""
        found: dict[str, str] = {}
        declared: dict[str, set[str]] = {}
        for container in self.containers().values():
            image = container["Image"]
            if image not in declared:
                config = json.loads(podman("image", "inspect", image))[0]["Config"]
                declared[image] = set(config.get("Volumes") or {})
            for mount in container.get("Mounts", []):
                if (
                    mount.get("Type") == "volume"
                    and mount["Destination"] in declared[image]
                    and self.project not in mount["Name"]
                ):
                    found[mount["Name"]] = mount["Destination"]
        return found

    def leftovers(self) -> dict[str, list[str]]:
        """What of this project still exists: anything named after it or labelled with it."""
        label = f"label=io.podman.compose.project={self.project}"
        found = {
            "containers": podman("ps", "-a", "--format", "{{.Names}}").split(),
            "pods": podman("pod", "ps", "--format", "{{.Name}}").split(),
            "networks": podman("network", "ls", "--format", "{{.Name}}").split(),
            "volumes": podman("volume", "ls", "--format", "{{.Name}}").split(),
        }
        labelled = {
            "containers": podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").split(),
            "networks": podman("network", "ls", "--filter", label, "--format", "{{.Name}}").split(),
            "volumes": podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").split(),
        }
        left = {
            kind: sorted(n for n in names if self.project in n or n in labelled.get(kind, []))
            for kind, names in found.items()
        }
        return {kind: names for kind, names in left.items() if names}

    def force_remove(self, left: dict[str, list[str]]) -> None:
        """Last resort after a failed teardown, so that no run leaves anything behind."""
        if left.get("containers"):
            podman("rm", "-f", "-v", "-t", "0", *left["containers"], check=False)
        if left.get("pods"):
            podman("pod", "rm", "-f", *left["pods"], check=False)
        if left.get("networks"):
            podman("network", "rm", "-f", *left["networks"], check=False)
        if left.get("volumes"):
            podman("volume", "rm", "-f", *left["volumes"], check=False)


class HealthScheduler(threading.Thread):
    """Runs ``podman healthcheck run`` on the project's running containers every second.

    Podman schedules HEALTHCHECKs with systemd timers; this machine has no systemd, so without
    this no container would ever leave "starting" and no ``service_healthy`` dependency would
    be met. Every second is more often than compose.yaml's intervals: it only makes the stack
    come up sooner. ``first_pass`` records, per container, when the first passing check began.
    """

    def __init__(self, project: str) -> None:
        super().__init__(name=f"healthchecks-{project}", daemon=True)
        self.project = project
        self.first_pass: dict[str, float] = {}
        self.errors: list[str] = []
        self._without: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(1.0):
            try:
                self._tick()
            except Exception as exc:  # a thread must not die silently mid-test
                self.errors.append(repr(exc))

    def _tick(self) -> None:
        running = podman(
            "ps", "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", "status=running", "--format", "{{.Names}}",
        ).split()  # fmt: skip
        for name in running:
            if name in self._without:
                continue
            began = time.time()
            done = subprocess.run(
                [*PODMAN, "healthcheck", "run", name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode == 0:
                self.first_pass.setdefault(name, began)
            elif "no defined healthcheck" in done.stderr:
                self._without.add(name)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)

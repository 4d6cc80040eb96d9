"""compose.yaml and the Dockerfiles, checked statically against the code they run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from models.settings import Settings
from tests.services import ROOT

COMPOSE = yaml.safe_load(Path(ROOT, "compose.yaml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]  # type: ignore[type-arg]
OURS = {name: s for name, s in SERVICES.items() if "build" in s}

#: Variables our processes read besides Settings: uvicorn's own
#: UVICORN_* options, boto3's credential chain, and the test suite's service addresses.
READ_ELSEWHERE = {
    "UVICORN_WORKERS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "TEST_POSTGRES_URL",
    "TEST_REDIS_URL",
}
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def resolve(value: object) -> str:
    """compose interpolation with nothing set: ``${VAR:-default}`` becomes ``default``."""
    return _DEFAULTED.sub(lambda m: m.group(2), str(value))


def test_compose_parses_and_has_the_stack():
    """postgres, redis, migrate, api, worker; sqs and tests behind profiles."""
    assert {"postgres", "redis", "migrate", "api", "worker"} <= SERVICES.keys()
    assert SERVICES["sqs"]["profiles"] == ["sqs"]
    assert SERVICES["tests"]["profiles"] == ["test"]


@pytest.mark.parametrize("name", sorted(OURS))
def test_build_contexts_dockerfiles_and_targets_exist(name: str):
    """Every build names a context and Dockerfile that exist (and a stage they define)."""
    build = OURS[name]["build"]
    context = Path(ROOT, build["context"])
    dockerfile = context / build["dockerfile"]
    assert context.is_dir()
    assert dockerfile.is_file()
    if "target" in build:
        assert re.search(rf"^FROM .+ AS {build['target']}$", dockerfile.read_text(), re.M)


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_variable_set_is_read_by_the_code(name: str):
    """No typo'd or dead settings: each variable is a Settings field or read elsewhere."""
    known = set(Settings.env_names()) | READ_ELSEWHERE
    assert set(OURS[name].get("environment", {})) - known == set()


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_get_valid_settings(name: str):
    """Required variables are set, and with compose's defaults they pass our validation."""
    environment = {k: resolve(v) for k, v in SERVICES[name]["environment"].items()}
    settings = Settings.from_env(environment)
    assert settings.database.url.startswith("postgresql+psycopg2://")
    assert settings.broker.url == "redis://redis:6379/0"


def test_migrate_runs_alembic_and_gates_the_app():
    """A one-shot migrate service; api and worker wait for it to complete successfully."""
    assert SERVICES["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert "DATABASE_URL" in SERVICES["migrate"]["environment"]
    for name in ("api", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["postgres", "redis", "api", "sqs"])
def test_healthchecks_exist(name: str):
    """What others wait on has a healthcheck."""
    assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(OURS)))
def test_third_party_images_are_pinned_to_versions(name: str):
    """No latest, no bare names: a version tag on every image we pull."""
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository, f"{name}: {image} has no tag"
    assert tag != "latest"
    assert re.match(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_worker_can_scale_and_stops_after_its_shutdown_timeout():
    """No container_name or host port on the worker (so --scale works); grace > shutdown."""
    worker = SERVICES["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    grace_s = int(worker["stop_grace_period"].rstrip("s"))
    assert grace_s * 1000 > int(worker["environment"]["WORKER_SHUTDOWN_TIMEOUT_MS"])


def test_no_secret_is_written_without_a_variable():
    """Passwords and keys appear only as ${VAR:-local default} interpolations."""
    text = Path(ROOT, "compose.yaml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|KEY_ID)\w*:", line):
            assert "${" in line, line


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfiles_follow_the_rules(dockerfile: str):
    """Base as an ARG, non-root USER, exec-form CMD, STOPSIGNAL, the runtime stage last."""
    text = Path(ROOT, dockerfile).read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11[\w.-]*-slim-bookworm$", text, re.M)
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.M)
    assert stages[-1] == "runtime"
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001", runtime, re.M)
    assert re.search(r'^CMD \["', runtime, re.M)
    assert "STOPSIGNAL SIGTERM" in runtime
    # Production: a missing DATABASE_URL/BROKER_URL is an error, never SQLite or memory.
    assert "TASKOVERFLOW_ENV=production" in runtime
    assert "COPY tests" not in runtime
    assert "COPY . ." not in runtime
    if dockerfile == "Dockerfile.api":
        assert "HEALTHCHECK" in runtime
        assert "COPY --chown=root:root workers/" not in runtime  # no calendar renderer


def test_both_images_share_the_dependency_stage():
    """Identical deps stages: the second build reuses the first one's layer."""

    def deps(name: str) -> str:
        text = Path(ROOT, name).read_text()
        return text.split("AS deps", 1)[1].split("\nFROM ", 1)[0]

    assert (
        deps("Dockerfile.api").split("# The test suite")[0].strip()
        == deps("Dockerfile.worker").strip()
    )

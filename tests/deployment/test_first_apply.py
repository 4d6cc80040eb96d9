"""What broke the first `terraform apply` of ops/terraform, one test per defect.

Each of these passed every static check we had before (checkov, fmt, the HCL ties) and still
failed on AWS. Where the defect is about what runs, `make aws-parity`
(tests/deployment/test_aws_parity.py) shows it too, by running the task definitions.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from api.job_events import LISTEN_CONNECTIONS
from models.engine import worker_pool_size
from models.settings import Settings
from tests.deployment import task_definitions
from tests.deployment.podman import PODMAN
from tests.deployment.test_terraform import (
    FACTS,
    containers,
    environment,
    parsed,
    resource,
    unquote,
)
from tests.processes import run
from tests.services import ROOT

TERRAFORM = Path(ROOT, "ops", "terraform")


def data_source(kind: str, name: str) -> dict[str, Any]:
    for block in parsed()["data"]:
        if f'"{kind}"' in block and f'"{name}"' in block[f'"{kind}"']:
            return block[f'"{kind}"'][f'"{name}"']
    raise KeyError(f"data.{kind}.{name}")


def policy_statements(name: str) -> list[dict[str, Any]]:
    return data_source("aws_iam_policy_document", name)["statement"]


# 1. The API's URL option -------------------------------------------------------------------


def test_1_the_apis_database_url_options_are_ones_its_driver_accepts():
    """?sslmode=require is libpq's; the API hands it to asyncpg as its ssl argument instead of
    a keyword asyncpg's connect() refuses (every request was a 503)."""
    from api.database import asyncpg_url_and_ssl

    url = environment("api")["DATABASE_URL"]
    assert "sslmode=require" in url  # RDS forces TLS (rds.force_ssl)
    stripped, args = asyncpg_url_and_ssl(url.replace("postgresql://", "postgresql+asyncpg://"))
    assert "sslmode" not in stripped
    assert args == {"ssl": "require"}


# 2. The migration's password ------------------------------------------------------------------


def test_2_migrations_read_the_database_password_like_the_app():
    """migrations/env.py builds its connection from the same settings as the API and the
    workers, so the migration task authenticates with the secret's password."""
    source = Path(ROOT, "migrations", "env.py").read_text()
    assert "DatabaseSettings.from_env" in source
    assert "use_password(engine, settings.database_password())" in source
    assert set(environment("migrate")) >= {"DATABASE_URL", "DB_PASSWORD_SECRET_ARN"}


# 3. Alarms on an encrypted topic ----------------------------------------------------------


def test_3_cloudwatch_may_use_the_key_that_encrypts_the_alarm_topic():
    """The SNS topic is encrypted with the customer key: its policy must let CloudWatch
    generate data keys and decrypt, or alarms fire and deliver nothing."""
    topic = resource("aws_sns_topic", "alarms")
    assert topic["kms_master_key_id"] == "${local.kms_key_arn}"
    allowed = [
        s
        for s in policy_statements("kms")
        if any("cloudwatch.amazonaws.com" in str(p["identifiers"]) for p in s.get("principals", []))
    ]
    assert allowed, "no key policy statement for cloudwatch.amazonaws.com"
    actions = {unquote(a) for s in allowed for a in s["actions"]}
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= actions


# 4. Password rotation ------------------------------------------------------------------------


def test_4_tasks_read_the_rotating_secret_themselves():
    """ECS would inject the password once, at task start; RDS rotates it every 7 days. The
    tasks get the secret's ARN and may read it (the code re-reads it when refused:
    tests/unit/test_credentials.py, and make aws-parity rotates it live)."""
    for task in ("api", "worker", "migrate"):
        assert "secrets" not in containers()[task]
        assert environment(task)["DB_PASSWORD_SECRET_ARN"] == FACTS.db_secret_arn
    readers = policy_statements("read_database_password")
    assert any(s["actions"] == ['"secretsmanager:GetSecretValue"'] for s in readers)
    for role in ("api", "worker"):
        sources = data_source("aws_iam_policy_document", role)["source_policy_documents"]
        assert sources == ["${data.aws_iam_policy_document.read_database_password.json}"]


# 5. Images by digest ---------------------------------------------------------------------


def test_5_task_definitions_pin_the_pushed_images_by_digest():
    """A tag can be rolled out before its push finishes (CannotPullContainer); a digest
    exists only once pushed, and names exactly that image."""
    for task, kind in (("api", "api"), ("worker", "worker"), ("migrate", "api")):
        image = containers()[task]["image"]
        repo = FACTS.repository_url.replace("{kind}", kind)
        assert image == f"{repo}@{FACTS.image_digests[kind]}"


def test_5_without_the_docker_provider_the_digest_is_looked_up_in_ecr():
    """build_images = false: the plan reads the pushed tag's digest (and fails if absent)."""
    rendered = task_definitions.render(FACTS, {"build_images": False})
    image = task_definitions.container_definitions(rendered)["api"]["image"]
    assert image.endswith("@" + FACTS.image_digests["api"])
    lookup = data_source("aws_ecr_image", "app")
    assert lookup["image_tag"] == "${var.image_tag}"


# 6. The README's migration command -------------------------------------------------------


FAKE_AWS = r"""#!/usr/bin/env python3
# Records each call and answers like the AWS CLI would for one successful migration task.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["ecs", "run-task"]:
    print("arn:aws:ecs:us-east-1:123456789012:task/taskoverflow/abc123")
elif args[:2] == ["ecs", "describe-tasks"]:
    query = args[args.index("--query") + 1]
    if "exitCode" in query:
        print(os.environ.get("FAKE_EXIT_CODE", "0"))
    else:
        print("Essential container in task exited")
"""

FAKE_TERRAFORM = r"""#!/usr/bin/env python3
# `terraform output -json migration`, as the real one prints it after an apply.
import json, sys
assert sys.argv[-3:] == ["output", "-json", "migration"], sys.argv
print(json.dumps({
    "region": "us-east-1", "cluster": "taskoverflow",
    "task_definition": "arn:aws:ecs:us-east-1:123456789012:task-definition/taskoverflow-migrate:7",
    "subnets": ["subnet-aaa", "subnet-bbb"], "security_groups": ["sg-123"],
    "assign_public_ip": True,
}, indent=2))
"""


def readme_migration_command() -> str:
    """The block under ops/README.md's "Migrate" heading, as a user would paste it."""
    text = Path(ROOT, "ops", "README.md").read_text()
    section = text[text.index("### 2. Migrate") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "ops/README.md: no bash block under '### 2. Migrate'"
    return block.group(1)


@pytest.fixture
def fake_cli(tmp_path: Path) -> dict[str, str]:
    for name, body in (("aws", FAKE_AWS), ("terraform", FAKE_TERRAFORM)):
        path = tmp_path / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "FAKE_AWS_LOG": str(tmp_path / "calls.jsonl"),
    }


def run_readme_command(env: dict[str, str], cwd: Path) -> tuple[int, list[list[str]], str]:
    done = run(
        ["bash", "-euo", "pipefail", "-c", readme_migration_command()], cwd=cwd, base_env=env
    )
    log = Path(env["FAKE_AWS_LOG"])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done.returncode, calls, done.stdout + done.stderr


def test_6_the_readmes_migration_command_gives_the_cli_clean_arguments(fake_cli):
    """Pasted from ops/README.md and run from the repository root: one run-task with the
    network configuration as the CLI wants it (no literal quotes), then it waits and checks
    the container's exit code."""
    code, calls, output = run_readme_command(fake_cli, Path(ROOT))
    assert code == 0, output
    run_task = next(c for c in calls if c[:2] == ["ecs", "run-task"])
    network = run_task[run_task.index("--network-configuration") + 1]
    assert network == (
        "awsvpcConfiguration={subnets=[subnet-aaa,subnet-bbb],securityGroups=[sg-123],"
        "assignPublicIp=ENABLED}"
    )
    assert all("'" not in arg and '"' not in arg for arg in run_task)
    assert run_task[run_task.index("--task-definition") + 1].endswith("taskoverflow-migrate:7")
    assert next(c for c in calls if c[1] == "wait")[:3] == ["ecs", "wait", "tasks-stopped"]


def test_6_a_failed_migration_fails_the_command(fake_cli):
    code, _, output = run_readme_command({**fake_cli, "FAKE_EXIT_CODE": "1"}, Path(ROOT))
    assert code != 0
    assert "FAILED (exit code 1" in output


# 7. Migrate before the rollout -------------------------------------------------------------


def test_7_the_migration_runs_with_the_new_image_before_the_services_roll_out():
    """One apply: new task definitions, then the migration task (re-run whenever its task
    definition, i.e. its image, changes), then the services."""
    migrate = resource("terraform_data", "migrate")
    assert migrate["triggers_replace"] == ["${aws_ecs_task_definition.migrate.arn}"]
    (provisioner,) = migrate["provisioner"]
    assert "run-migration.sh" in provisioner['"local-exec"']["command"]
    for service in ("api", "worker"):
        assert "${terraform_data.migrate}" in resource("aws_ecs_service", service)["depends_on"]
    # The migration runs the release's API image (the one holding migrations/).
    assert containers()["migrate"]["image"] == containers()["api"]["image"]


# 8. Connection budget --------------------------------------------------------------------


def connections_at_full_scale(variables: dict[str, Any]) -> tuple[int, int]:
    """(needed, available) from the rendered task definitions, the code's pool sizes and
    the variables' values."""
    rendered = task_definitions.render(FACTS, variables)
    tasks = task_definitions.container_definitions(rendered)
    defaults = {block["__tfmeta"]["label"]: block.get("default") for block in rendered["variable"]}
    values = {**defaults, **variables}
    api_env = {e["name"]: e["value"] for e in tasks["api"]["environment"]}
    worker_env = {e["name"]: e["value"] for e in tasks["worker"]["environment"]}
    api_settings = Settings.from_env({**api_env, "TASKOVERFLOW_ENV": "production"})
    per_api_task = int(api_env["UVICORN_WORKERS"]) * (
        api_settings.database.pool_size + LISTEN_CONNECTIONS
    )
    per_worker_task = int(worker_env["WORKER_PROCESSES"]) * worker_pool_size(
        int(worker_env["DRAMATIQ_THREADS"])
    )
    # A rollout runs desired x maximum percent / 100 API tasks, rounded down (ECS's rule);
    # the workers never surge (their maximum is 100 %).
    services = {b["__tfmeta"]["path"]: b for b in rendered["aws_ecs_service"]}
    api_service = services["aws_ecs_service.api"]
    assert services["aws_ecs_service.worker"]["deployment_maximum_percent"] == 100
    api_in_rollout = values["api_desired_count"] * api_service["deployment_maximum_percent"] // 100
    assert api_in_rollout == values["api_desired_count"] + 1
    needed = (
        api_in_rollout * per_api_task
        + values["worker_max_count"] * per_worker_task
        + 1  # a migration task
    )
    local = task_definitions.local_values(rendered)
    superuser_reserved = 3  # RDS's superuser_reserved_connections
    available = local["db_max_connections"] - superuser_reserved - values["db_connection_reserve"]
    # Terraform's own precondition must compute the same.
    assert local["db_connections"] == {"needed": needed, "available": available}
    return needed, available


def test_8_every_task_at_full_scale_gets_its_database_connections():
    needed, available = connections_at_full_scale({})
    assert needed <= available, f"{needed} connections needed, {available} available"


def test_8_the_old_defaults_did_not_fit():
    """10 worker tasks x (8 threads + 1) + 3 API tasks in a rollout x (10 + 1 listening) + 1
    = 124 on a db.t4g.micro; and the defaults before rollouts were counted (6 workers):
    6 x 9 + 3 x 6 + 1 = 73."""
    needed, available = connections_at_full_scale({"worker_max_count": 10, "api_db_pool_size": 10})
    assert needed == 124
    assert needed > available
    needed, available = connections_at_full_scale({"worker_max_count": 6})
    assert needed == 73
    assert needed > available


# 9. A writable /tmp --------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_9_images_declare_the_task_volume_so_fargate_copies_its_permissions(dockerfile: str):
    """Fargate mounts a task volume as an empty root-owned 0755 directory unless the image
    declares VOLUME at that path (then it copies the image's /tmp, mode 1777). make
    aws-parity mounts it the same way and writes to it as uid 10001."""
    text = Path(ROOT, dockerfile).read_text()
    assert re.search(r'^VOLUME \["/tmp"\]$', text, re.M)
    mounts = {m["containerPath"] for task in containers().values() for m in task["mountPoints"]}
    assert mounts == {"/tmp"}


# 10. Stop timeout ----------------------------------------------------------------------------


def test_10_the_worker_hands_jobs_back_before_ecs_kills_it():
    """SIGKILL at stopTimeout must come after the thread wait (itself longer than any SQL
    statement may run) and the consumers' last long poll, with a margin."""
    worker = environment("worker")
    shutdown_ms = int(worker["WORKER_SHUTDOWN_TIMEOUT_MS"])
    statement_ms = int(worker["DB_STATEMENT_TIMEOUT_MS"])
    long_poll_ms = int(worker["SQS_WAIT_TIME_S"]) * 1000
    stop_ms = containers()["worker"]["stopTimeout"] * 1000
    assert statement_ms < shutdown_ms
    assert shutdown_ms + long_poll_ms + 10_000 <= stop_ms <= 120_000


# 11. Networks without a default VPC -----------------------------------------------------------


def test_11_the_default_vpc_is_read_only_when_no_subnets_are_given():
    for kind, name in (("aws_vpc", "default"), ("aws_subnets", "default")):
        assert data_source(kind, name)["count"] == "${local.use_default_vpc ? 1 : 0}"
    assert 'variable "vpc_id"' not in Path(TERRAFORM, "variables.tf").read_text()
    assert (
        data_source("aws_subnet", "given")["for_each"] == "${toset(coalesce(var.subnet_ids, []))}"
    )
    (check,) = resource("aws_security_group", "alb")["lifecycle"][0]["precondition"]
    assert check["condition"] == "${length(local.vpc_ids) == 1}"


# 12. Destroy, and create again ------------------------------------------------------------------


def test_12_destroy_can_delete_the_repositories_and_snapshots_never_collide():
    repo = resource("aws_ecr_repository", "app")
    assert repo["force_delete"] == "${!var.deletion_protection}"
    db = resource("aws_db_instance", "main")
    assert "timestamp()" in db["final_snapshot_identifier"]
    assert db["lifecycle"][0]["ignore_changes"] == ["final_snapshot_identifier"]


# 13. What goes into a build context or a commit ----------------------------------------------

LEAKS = [
    "ops/terraform/.terraform/providers/registry.terraform.io/hashicorp/aws/5.100.0/terraform-provider-aws",
    "ops/terraform/terraform.tfstate",
    "ops/terraform/terraform.tfstate.backup",
    "ops/terraform/release.tfplan",
    ".venv-checkov/bin/checkov",
]


def test_13_git_ignores_terraform_state_providers_and_checkovs_venv():
    done = run(["git", "check-ignore", "--no-index", *LEAKS])
    assert sorted(done.stdout.split()) == sorted(LEAKS)


@pytest.mark.deployment
def test_13_the_build_context_leaves_them_out(tmp_path: Path, base_image: str):
    """podman (like docker) reads .dockerignore: build from a context holding the leaks
    and list what the build could see."""
    podman = PODMAN
    (tmp_path / ".dockerignore").write_text(Path(ROOT, ".dockerignore").read_text())
    for leak in [*LEAKS, "models/kept.py"]:
        (tmp_path / leak).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / leak).write_text("x")
    (tmp_path / "Containerfile").write_text("FROM scratch\nCOPY . /context/\n")
    image = f"localhost/taskoverflow-context-probe:{os.getpid()}"
    subprocess.run(
        [*podman, "build", "-q", "-f", str(tmp_path / "Containerfile"), "-t", image, str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        container = subprocess.run(
            [*podman, "create", image, "x"], check=True, capture_output=True, text=True
        ).stdout.strip()
        listing = subprocess.run(
            [*podman, "export", container], check=True, capture_output=True, timeout=60
        ).stdout
        subprocess.run([*podman, "rm", container], check=False, capture_output=True)
    finally:
        subprocess.run([*podman, "rmi", "-f", image], check=False, capture_output=True)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        names = tar.getnames()
    assert "context/models/kept.py" in names
    assert not [n for n in names if any(n.endswith(leak) for leak in LEAKS)], names


def test_the_rendering_refuses_an_unresolved_value():
    """A container definition with a value Terraform could not resolve is never run."""
    with pytest.raises(ValueError, match="could not be resolved"):
        task_definitions._no_unknowns({"environment": [{"name": "X", "value": None}]}, "t")


# The Learner Lab's variables file ----------------------------------------------------------


def test_the_learner_lab_variables_are_declared_render_and_fit_the_database():
    import hcl2

    with Path(TERRAFORM, "learner-lab.tfvars").open() as f:
        values = {k: unquote(v) for k, v in hcl2.load(f).items() if not k.startswith("__")}
    declared = {unquote(name) for block in parsed()["variable"] for name in block}
    assert set(values) <= declared, set(values) - declared
    assert values["deletion_protection"] is False  # a lab account must be able to destroy
    assert values["db_storage_type"] == "gp2"
    # ops/README.md's Learner Lab table says what the file sets (it once said gp3).
    (row,) = [
        line
        for line in Path(ROOT, "ops", "README.md").read_text().splitlines()
        if line.startswith("| RDS: nano")
    ]
    assert "20 GB gp2" in row
    assert "uses gp3" not in row
    assert values["create_kms_key"] is False  # the lab documents nothing about creating keys
    needed, available = connections_at_full_scale(values)
    assert needed <= available
    assert values["api_keys_enabled"] is False  # the course's clients send no key
    # Backpressure leaves room for the lab's worker ceiling to be reached (the plan's
    # precondition on the API task definition).
    rendered = task_definitions.render(FACTS, values)
    api = task_definitions.container_definitions(rendered)["api"]["environment"]
    (jobs_max,) = [int(e["value"]) for e in api if e["name"] == "JOBS_MAX_UNFINISHED"]
    defaults = {b["__tfmeta"]["label"]: b.get("default") for b in rendered["variable"]}
    lab = {**defaults, **values}
    assert jobs_max > lab["backlog_per_worker_target"] * lab["worker_max_count"]

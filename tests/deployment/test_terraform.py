"""ops/terraform, checked offline: it parses, passes checkov, and agrees with the code."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from api.app import create_app
from models.settings import SQS_MAX_DELAY_MS, SQS_VISIBILITY_MARGIN_S, Settings
from models.sqs import queue_names
from tests.deployment import task_definitions
from tests.services import ROOT

TERRAFORM = Path(ROOT, "ops", "terraform")
CHECKOV = Path(ROOT, ".venv-checkov", "bin", "checkov")
TF_FILES = sorted(TERRAFORM.glob("*.tf"))
#: Read by uvicorn (UVICORN_*) rather than by Settings (the worker launcher reads Settings).
READ_ELSEWHERE = {"UVICORN_WORKERS"}


@cache
def parsed() -> dict[str, list[Any]]:
    """Every block of every .tf file, merged by kind (resource, variable, locals, ...)."""
    blocks: dict[str, list[Any]] = {}
    for path in TF_FILES:
        with path.open() as f:
            for kind, items in hcl2.load(f).items():
                blocks.setdefault(kind, []).extend(items)
    return blocks


def unquote(value: Any) -> Any:
    return value[1:-1] if isinstance(value, str) and value[:1] == value[-1:] == '"' else value


def locals_() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in parsed()["locals"]:
        merged.update(block)
    return merged


def variable_default(name: str) -> Any:
    for block in parsed()["variable"]:
        if f'"{name}"' in block:
            return unquote(block[f'"{name}"'].get("default"))
    raise KeyError(name)


def resource(kind: str, name: str) -> dict[str, Any]:
    for block in parsed()["resource"]:
        if f'"{kind}"' in block and f'"{name}"' in block[f'"{kind}"']:
            return block[f'"{kind}"'][f'"{name}"']
    raise KeyError(f"{kind}.{name}")


FACTS = task_definitions.AwsFacts(
    db_endpoint="db.example.internal:5432",
    db_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1",
    repository_url="123456789012.dkr.ecr.us-east-1.amazonaws.com/taskoverflow-{kind}",
    image_digests={"api": "sha256:" + "a" * 64, "worker": "sha256:" + "b" * 64},
)


@cache
def containers() -> dict[str, dict[str, Any]]:
    """The three container definitions as Terraform renders them (tests/deployment)."""
    return task_definitions.container_definitions(task_definitions.render(FACTS))


def environment(task: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in containers()[task]["environment"]}


def test_standard_module_files_exist_and_every_file_parses():
    """main/variables/outputs/versions.tf are there; python-hcl2 parses every .tf file."""
    names = {p.name for p in TF_FILES}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    assert parsed()["resource"]


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary here")
def test_terraform_fmt_is_clean():
    """`terraform fmt -check -recursive` passes (the binary needs no providers for this)."""
    done = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_variable_is_typed_and_described():
    """No untyped or undocumented input."""
    for block in parsed()["variable"]:
        for name, spec in block.items():
            assert spec.get("type"), name
            assert len(unquote(spec.get("description", ""))) > 10, name


def test_providers_are_pinned():
    """aws and docker (the practical's kreuzwerker provider) with version constraints."""
    (providers,) = parsed()["terraform"][0]["required_providers"]
    assert providers["aws"]["source"] == '"hashicorp/aws"'
    assert providers["docker"]["source"] == '"kreuzwerker/docker"'
    for spec in providers.values():
        if isinstance(spec, dict):
            assert unquote(spec["version"]).startswith("~>")


def run_checkov(*args: str) -> dict[str, Any]:
    assert CHECKOV.exists(), "checkov is not installed: `make install` puts it in .venv-checkov"
    done = subprocess.run(
        [str(CHECKOV), *args, "-o", "json"],
        cwd=Path(ROOT, "ops"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_nothing_and_every_skip_has_a_reason():
    """0 failed checks over ops/terraform, with our custom checks; skips carry reasons."""
    report = run_checkov("--config-file", ".checkov.yaml")
    failed = report["results"]["failed_checks"]
    assert failed == [], [(f["check_id"], f["resource"]) for f in failed]
    passed_ids = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV_TO_1", "CKV_TO_2"} <= passed_ids
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]


def test_custom_checks_catch_a_queue_without_dlq_and_a_root_container():
    """The custom checks fail where they should (a fixture written wrong on purpose)."""
    fixture = Path(ROOT, "tests", "fixtures", "terraform_bad")
    report = run_checkov(
        "-d",
        str(fixture),
        "--external-checks-dir",
        "checkov",
        "--skip-download",
        "-c",
        "CKV_TO_1,CKV_TO_2",
    )
    failed = {(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]}
    assert failed == {
        ("CKV_TO_1", "aws_sqs_queue.job_without_dlq"),
        ("CKV_TO_1", "aws_sqs_queue.unlabelled"),
        ("CKV_TO_2", "aws_ecs_task_definition.root_user"),
        ("CKV_TO_2", "aws_ecs_task_definition.no_user"),
    }


def code_settings(**environ: str) -> Settings:
    """The code's settings for an SQS deployment: its defaults, plus ``environ``."""
    return Settings.from_env(
        {"DATABASE_URL": "postgresql://u@h/db", "BROKER_URL": "sqs://", **environ}
    )


def test_queue_names_are_the_brokers():
    """Terraform's job queue and DLQ names are what the SQS broker looks up."""
    assert unquote(locals_()["job_queue_name"]) == "${local.namespace}_${var.queue_name}"
    assert unquote(locals_()["dlq_name"]) == "${local.job_queue_name}_dlq"
    namespace = variable_default("name").replace("-", "_")
    settings = code_settings(BROKER_NAMESPACE=namespace, QUEUE_NAME=variable_default("queue_name"))
    assert queue_names(settings.broker) == (
        f"{namespace}_{variable_default('queue_name')}",
        f"{namespace}_{variable_default('queue_name')}_dlq",
    )
    jobs = resource("aws_sqs_queue", "jobs")
    assert jobs["name"] == "${local.job_queue_name}"
    assert resource("aws_sqs_queue", "jobs_dlq")["name"] == "${local.dlq_name}"


def test_visibility_timeout_exceeds_the_time_limit_like_the_code_computes_it():
    """visibility = ceil(time limit) + 30 s in both; the queue and the workers use it."""
    assert locals_()["job_time_limit_s"] == "${ceil(var.job_time_limit_ms / 1000)}"
    assert (
        locals_()["visibility_timeout_s"]
        == f"${{local.job_time_limit_s + {SQS_VISIBILITY_MARGIN_S}}}"
    )
    time_limit_ms = variable_default("job_time_limit_ms")
    terraform_visibility = math.ceil(time_limit_ms / 1000) + SQS_VISIBILITY_MARGIN_S
    code = code_settings(JOB_TIME_LIMIT_MS=str(time_limit_ms))
    assert code.broker.sqs_visibility_timeout_s == terraform_visibility
    assert terraform_visibility > time_limit_ms / 1000
    assert (
        resource("aws_sqs_queue", "jobs")["visibility_timeout_seconds"]
        == "${local.visibility_timeout_s}"
    )
    for task in ("api", "worker"):
        assert environment(task)["SQS_VISIBILITY_TIMEOUT_S"] == str(terraform_visibility)


def test_redrive_and_retry_settings_agree():
    """maxReceiveCount is the code's SQS_MAX_RECEIVE_COUNT; backoff within SQS's cap.

    Not JOB_MAX_RETRIES itself: a Dramatiq retry is a new message (receive count 1), so
    receives only pile up when workers crash or cannot decode a message.
    """
    redrive = resource("aws_sqs_queue", "jobs")["redrive_policy"]
    assert "maxReceiveCount = var.sqs_max_receive_count" in redrive
    assert "deadLetterTargetArn = aws_sqs_queue.jobs_dlq.arn" in redrive
    defaults = code_settings()
    assert variable_default("sqs_max_receive_count") == defaults.broker.sqs_max_receive_count
    assert variable_default("job_max_retries") == defaults.jobs.max_retries
    assert (
        variable_default("job_max_backoff_ms") == defaults.jobs.max_backoff_ms <= SQS_MAX_DELAY_MS
    )
    assert variable_default("job_time_limit_ms") == defaults.jobs.time_limit_ms


@pytest.mark.parametrize("task", ["api", "worker", "migrate"])
def test_task_environments_are_read_by_the_code(task: str):
    """Every variable a task definition sets is one the code reads, and the code accepts the
    whole environment (as Settings.from_env would at start-up)."""
    names = set(environment(task))
    assert names - set(Settings.env_names()) - READ_ELSEWHERE == set()
    assert "DATABASE_URL" in names
    if task != "migrate":
        assert environment(task)["BROKER_URL"] == "sqs://"
        Settings.from_env({**environment(task), "TASKOVERFLOW_ENV": "production"})


def test_database_password_comes_from_the_rds_managed_secret():
    """No password in Terraform state or task definitions: RDS manages it, and every task
    reads it from the secret itself (so it can read it again after a rotation)."""
    db = resource("aws_db_instance", "main")
    assert db["manage_master_user_password"] is True
    assert db["storage_encrypted"] is True
    assert db["publicly_accessible"] is False
    for task in ("api", "worker", "migrate"):
        assert environment(task)["DB_PASSWORD_SECRET_ARN"] == FACTS.db_secret_arn
        assert "secrets" not in containers()[task]
        assert "password" not in environment(task)["DATABASE_URL"]


def test_health_check_paths_and_port_are_the_apis():
    """The container health check (liveness) and the ALB's (readiness) are routes the app
    serves, on the image's port."""
    routes = {route.path for route in create_app(code_settings()).routes}
    port = containers()["api"]["portMappings"][0]["containerPort"]
    assert f"UVICORN_PORT={port}" in Path(ROOT, "Dockerfile.api").read_text()
    liveness = containers()["api"]["healthCheck"]["command"][-1]
    assert f"http://127.0.0.1:{port}/api/v1/health'" in liveness
    assert "/api/v1/health" in routes
    assert unquote(locals_()["ready_path"]) == "/api/v1/health/ready" in routes
    health_check = resource("aws_lb_target_group", "api")["health_check"][0]
    assert health_check["path"] == "${local.ready_path}"


def test_containers_are_non_root_read_only_and_stop_after_the_shutdown():
    """user 10001, read-only root filesystem, /tmp from the task volume; the worker's
    stopTimeout leaves room for the thread wait and the consumers' last long poll."""
    for task in containers().values():
        assert task["user"].split(":")[0] not in ("", "0", "root")
        assert task["readonlyRootFilesystem"] is True
        assert task["mountPoints"] == [
            {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}
        ]
    worker = environment("worker")
    shutdown_s = int(worker["WORKER_SHUTDOWN_TIMEOUT_MS"]) / 1000
    long_poll_s = int(worker["SQS_WAIT_TIME_S"])
    assert shutdown_s > int(worker["DB_STATEMENT_TIMEOUT_MS"]) / 1000
    assert shutdown_s + long_poll_s + 10 <= containers()["worker"]["stopTimeout"] <= 120


def test_workers_scale_on_backlog_per_task():
    """Target tracking on visible messages / running tasks, min and max from variables."""
    target = resource("aws_appautoscaling_target", "worker")
    assert target["min_capacity"] == "${var.worker_min_count}"
    assert target["max_capacity"] == "${var.worker_max_count}"
    policy = json.dumps(resource("aws_appautoscaling_policy", "worker_backlog"))
    assert "ApproximateNumberOfMessagesVisible" in policy
    assert "RunningTaskCount" in policy
    assert "visible / tasks" in policy


# The job metrics' names, dimensions and namespace: tests/unit/test_metric_names.py (the
# workers write them as CloudWatch EMF lines; no log metric filters any more).

"""ops/terraform, checked offline: it parses, passes checkov, and agrees with the code."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
from functools import cache
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import hcl2
import pytest

from api.app import create_app
from models.settings import (
    SQS_MAX_DELAY_MS,
    SQS_VISIBILITY_MARGIN_S,
    ConfigError,
    LimitSettings,
    Settings,
)
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


#: The subnets of a rendering that gives subnet_ids (their CIDRs stand in for AWS's answer).
SUBNET_CIDRS = {"subnet-aaa": "10.20.1.0/24", "subnet-bbb": "10.20.2.0/24"}
#: Every optional part of the API's access and limits switched on.
EVERYTHING_ON: dict[str, Any] = {
    "api_keys_enabled": True,
    "cors_allow_origins": ["https://app.example.org", "http://localhost:5173"],
    "api_limits": {"RATE_LIMIT_WRITES_PER_MINUTE": 600, "TODOS_MAX": 5000},
    "allowed_cidrs": ["203.0.113.0/24", "198.51.100.0/24"],
    "certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/abc",
    "subnet_ids": list(SUBNET_CIDRS),
}


@cache
def rendering(variant: str) -> dict[str, Any]:
    """The whole configuration evaluated: "defaults" or "everything_on"."""
    if variant == "defaults":
        return task_definitions.render(FACTS)
    assert variant == "everything_on", variant
    return task_definitions.render(
        dataclasses.replace(FACTS, subnet_cidrs=SUBNET_CIDRS), EVERYTHING_ON
    )


def variant_environment(variant: str, task: str) -> dict[str, str]:
    definition = task_definitions.container_definitions(rendering(variant))[task]
    return {e["name"]: e["value"] for e in definition["environment"]}


def api_settings(variant: str) -> Settings:
    """What the API task starts with (production, as on ECS)."""
    return Settings.from_env(
        {**variant_environment(variant, "api"), "TASKOVERFLOW_ENV": "production"}
    )


def test_standard_module_files_exist_and_every_file_parses():
    """main/variables/outputs/versions.tf are there; python-hcl2 parses every .tf file."""
    names = {p.name for p in TF_FILES}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    assert parsed()["resource"]


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


@pytest.mark.parametrize("variant", ["defaults", "everything_on"])
@pytest.mark.parametrize("task", ["api", "worker", "migrate"])
def test_task_environments_are_read_by_the_code(task: str, variant: str):
    """Every variable a task definition sets is one the code reads, and the code accepts the
    whole environment (as Settings.from_env would at start-up), with the optional parts
    (API keys, CORS, limits, given subnets) off and on."""
    env = variant_environment(variant, task)
    names = set(env)
    assert names - set(Settings.env_names()) - READ_ELSEWHERE == set()
    assert "DATABASE_URL" in names
    if task != "migrate":
        assert env["BROKER_URL"] == "sqs://"
        Settings.from_env({**env, "TASKOVERFLOW_ENV": "production"})


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
    """The container health check and the ALB's are the same liveness route, served by the
    app on the image's port (a database outage must not make ECS replace the tasks)."""
    routes = {route.path for route in create_app(code_settings()).routes}
    port = containers()["api"]["portMappings"][0]["containerPort"]
    assert f"UVICORN_PORT={port}" in Path(ROOT, "Dockerfile.api").read_text()
    liveness = containers()["api"]["healthCheck"]["command"][-1]
    assert f"http://127.0.0.1:{port}/api/v1/health'" in liveness
    assert "/api/v1/health" in routes
    assert unquote(locals_()["health_path"]) == "/api/v1/health"
    health_check = resource("aws_lb_target_group", "api")["health_check"][0]
    assert health_check["path"] == "${local.health_path}"


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


# --- The API's access and limits (models/settings.py AccessSettings, LimitSettings) --------


def variable_defaults(parsed_: dict[str, Any]) -> dict[str, Any]:
    return {block["__tfmeta"]["label"]: block.get("default") for block in parsed_["variable"]}


def test_the_api_believes_forwarded_headers_only_from_the_load_balancers_network():
    """TRUSTED_PROXIES is the default VPC's range, or the given subnets' ranges (where the
    load balancer's nodes are), and the code parses it to exactly those networks; the rate
    limits count in Postgres, shared by every API process (no Redis on this deployment)."""
    assert api_settings("defaults").access.proxy_networks == (ip_network(FACTS.vpc_cidr),)
    assert set(api_settings("everything_on").access.proxy_networks) == {
        ip_network(cidr) for cidr in SUBNET_CIDRS.values()
    }
    for variant in ("defaults", "everything_on"):
        assert variant_environment(variant, "api")["RATE_LIMIT_STORE"] == "postgres"
        assert api_settings(variant).rate_limit_store == "postgres"


def test_cors_origins_and_limits_reach_the_api_only_when_set():
    """cors_allow_origins and api_limits become the code's settings; unset, the code's own
    defaults apply (nothing is written)."""
    defaults = variant_environment("defaults", "api")
    assert "CORS_ALLOW_ORIGINS" not in defaults
    limit_names = set(LimitSettings.env_names()) - {"JOBS_MAX_UNFINISHED", "RATE_LIMIT_STORE"}
    assert not limit_names & set(defaults)
    on = api_settings("everything_on")
    assert on.access.cors_origins == tuple(EVERYTHING_ON["cors_allow_origins"])
    assert on.limits.rate_limit_writes == 600
    assert on.limits.todos_max == 5000
    assert on.limits.rate_limit_reads == LimitSettings().rate_limit_reads


def alb_ingress(parsed_: dict[str, Any]) -> set[tuple[str | None, int, int]]:
    """(CIDR, from port, to port) of every ingress rule on the load balancer's group."""
    alb = task_definitions.resource(parsed_, "aws_security_group", "alb")["id"]
    return {
        (rule.get("cidr_ipv4"), rule["from_port"], rule["to_port"])
        for rule in parsed_["aws_vpc_security_group_ingress_rule"]
        if rule["security_group_id"] == alb
    }


def test_the_load_balancer_admits_only_the_allowed_cidrs():
    """Anyone by default; with allowed_cidrs, HTTP (and HTTPS with a certificate) from
    those ranges only: no other rule opens the load balancer."""
    assert variable_defaults(rendering("defaults"))["allowed_cidrs"] == ["0.0.0.0/0"]
    for name in ("alb_http", "alb_https"):
        rule = resource("aws_vpc_security_group_ingress_rule", name)
        assert rule["cidr_ipv4"] == "${each.value}"
        assert "var.allowed_cidrs" in rule["for_each"]
    assert alb_ingress(rendering("defaults")) == {("0.0.0.0/0", 80, 80)}
    assert alb_ingress(rendering("everything_on")) == {
        (cidr, port, port) for cidr in EVERYTHING_ON["allowed_cidrs"] for port in (80, 443)
    }


def policy_statements(parsed_: dict[str, Any], document: str) -> list[dict[str, Any]]:
    found = task_definitions.resource(parsed_, "aws_iam_policy_document", document)["statement"]
    return found if isinstance(found, list) else [found]


#: Every policy a role of ours gets (the API's also includes read_database_password).
POLICY_DOCUMENTS = ("api", "worker", "execution", "read_database_password")


def test_the_api_keys_secret_is_wired_only_when_enabled():
    """Off (the course contract): no secret, no variable, no grant. On: the API task gets
    the secret's ARN, and its role, alone, may GetSecretValue on that secret alone: not on
    the plaintext first key's."""
    off = rendering("defaults")
    assert not off.get("aws_secretsmanager_secret")
    for task in ("api", "worker", "migrate"):
        assert not {"API_KEYS", "API_KEYS_SECRET_ARN"} & set(variant_environment("defaults", task))
    assert not api_settings("defaults").access.keys_required
    assert not [
        s
        for doc in POLICY_DOCUMENTS
        for s in policy_statements(off, doc)
        if "ApiKeys" in s.get("sid", "")
    ]

    on = rendering("everything_on")
    secrets = {b["__tfmeta"]["path"]: b["arn"] for b in on["aws_secretsmanager_secret"]}
    assert secrets == {
        "aws_secretsmanager_secret.api_keys[0]": FACTS.api_keys_secret_arn,
        "aws_secretsmanager_secret.initial_api_key[0]": FACTS.initial_api_key_secret_arn,
    }
    assert variant_environment("everything_on", "api")["API_KEYS_SECRET_ARN"] == (
        FACTS.api_keys_secret_arn
    )
    assert api_settings("everything_on").access.api_keys_secret_arn == FACTS.api_keys_secret_arn
    assert api_settings("everything_on").access.keys_required
    for task in ("worker", "migrate"):
        assert "API_KEYS_SECRET_ARN" not in variant_environment("everything_on", task)
    granting = [
        (doc, s)
        for doc in POLICY_DOCUMENTS
        for s in policy_statements(on, doc)
        if set(s.get("resources", []))
        & {FACTS.api_keys_secret_arn, FACTS.initial_api_key_secret_arn}
    ]
    assert [(doc, s["actions"], s["resources"]) for doc, s in granting] == [
        ("api", ["secretsmanager:GetSecretValue"], [FACTS.api_keys_secret_arn])
    ]
    # Secrets Manager decrypts it with the key the API may already use through it (the
    # grant itself is checked on the applied policy: test_terraform_provider.py).
    for name in ("api_keys", "initial_api_key"):
        assert resource("aws_secretsmanager_secret", name)["kms_key_id"] == "${local.kms_key_arn}"
    # The API tasks roll out once the secret has its first value and the role its grant.
    assert {"${aws_secretsmanager_secret_version.api_keys}", "${aws_iam_role_policy.api}"} <= set(
        resource("aws_ecs_service", "api")["depends_on"]
    )


def test_the_api_keys_secrets_are_written_once_and_never_stored_in_the_state():
    """Both secrets are written through write-only arguments from one ephemeral key, once
    (a fixed version); the entries are then the operators' to rotate. What the apply writes
    (the hash entry the code parses, nothing in the state) is checked by applying it:
    test_terraform_provider.py::test_apply_and_destroy_the_defaults."""
    for name in ("api_keys", "initial_api_key"):
        version = resource("aws_secretsmanager_secret_version", name)
        assert "secret_string" not in version
        assert "ephemeral.aws_secretsmanager_random_password.initial_api_key" in str(
            version["secret_string_wo"]
        )
        assert version["secret_string_wo_version"] == 1
        (lifecycle,) = version["lifecycle"]
        assert "version_stages" in lifecycle["ignore_changes"]
    (generator,) = [
        block['"aws_secretsmanager_random_password"']['"initial_api_key"']
        for block in parsed()["ephemeral"]
        if '"aws_secretsmanager_random_password"' in block
    ]
    # A Bearer token with no characters to quote or escape, and ~285 bits.
    assert generator["exclude_punctuation"] is True
    assert generator["include_space"] is False
    assert generator["password_length"] >= 32


@pytest.mark.parametrize(
    "variables",
    [{}, {"worker_max_count": 4, "worker_threads": 3, "jobs_queued_per_worker_thread": 25}],
    ids=["defaults", "custom"],
)
def test_jobs_max_unfinished_is_the_worker_capacity_terraform_scales_to(variables: dict[str, Any]):
    """JOBS_MAX_UNFINISHED = autoscaling ceiling x WORKER_PROCESSES x DRAMATIQ_THREADS (as the
    worker task definition sets them) x jobs_queued_per_worker_thread, and it leaves each
    worker task more than the autoscaling target's backlog (or the pool never scales out)."""
    parsed_ = task_definitions.render(FACTS, variables)
    values = {**variable_defaults(parsed_), **variables}
    tasks = task_definitions.container_definitions(parsed_)
    worker = {e["name"]: e["value"] for e in tasks["worker"]["environment"]}
    api = {e["name"]: e["value"] for e in tasks["api"]["environment"]}
    ceiling = task_definitions.resource(parsed_, "aws_appautoscaling_target", "worker")
    assert ceiling["max_capacity"] == values["worker_max_count"]
    expected = (
        ceiling["max_capacity"]
        * int(worker["WORKER_PROCESSES"])
        * int(worker["DRAMATIQ_THREADS"])
        * values["jobs_queued_per_worker_thread"]
    )
    assert int(api["JOBS_MAX_UNFINISHED"]) == expected
    limits = Settings.from_env({**api, "TASKOVERFLOW_ENV": "production"}).limits
    assert limits.jobs_max_unfinished == expected
    assert expected > values["backlog_per_worker_target"] * values["worker_max_count"]
    (check,) = resource("aws_ecs_task_definition", "api")["lifecycle"][0]["precondition"]
    assert check["condition"] == (
        "${local.jobs_max_unfinished > var.backlog_per_worker_target * var.worker_max_count}"
    )


# --- Variable validations, run by Terraform itself (no providers needed) ----------------------

#: LimitSettings that api_limits may set: all but the derived and the fixed one.
API_LIMIT_NAMES = sorted(
    set(LimitSettings.env_names()) - {"JOBS_MAX_UNFINISHED", "RATE_LIMIT_STORE"}
)


def terraform_accepts(tmp_path: Path, name: str, value: Any) -> bool:
    """Whether `terraform console` takes ``value`` for variable ``name`` (its validations)."""
    shutil.copy(TERRAFORM / "variables.tf", tmp_path / "variables.tf")
    values = tmp_path / "values.tfvars.json"
    values.write_text(json.dumps({"image_tag": "local", name: value}))
    done = subprocess.run(
        ["terraform", "console", f"-var-file={values.name}"],
        input="1\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "TF_IN_AUTOMATION": "1"},
    )
    refused = "Invalid value for variable" in done.stderr
    assert refused or (done.returncode == 0 and done.stdout.strip() == "1"), done.stderr
    return not refused


needs_terraform = pytest.mark.skipif(
    shutil.which("terraform") is None, reason="no terraform binary here"
)


@needs_terraform
@pytest.mark.parametrize(
    ("cidrs", "accepted"),
    [
        (["0.0.0.0/0"], True),
        (["203.0.113.0/24", "10.0.0.0/8"], True),
        ([], False),  # nobody could reach the load balancer
        (["203.0.113.7/24"], False),  # host bits: AWS would keep another range
        (["::/0"], False),  # the load balancer is IPv4 only
        (["203.0.113.7"], False),
        (["anywhere"], False),
    ],
)
def test_allowed_cidrs_takes_ipv4_networks_only(tmp_path: Path, cidrs: list[str], accepted: bool):
    assert terraform_accepts(tmp_path, "allowed_cidrs", cidrs) is accepted


@needs_terraform
@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.org",
        "http://localhost:5173",
        "https://app.example.org/",
        "https://app.example.org/path",
        "app.example.org",
        "ftp://app.example.org",
    ],
)
def test_cors_allow_origins_takes_what_the_code_takes(tmp_path: Path, origin: str):
    """Terraform refuses an origin exactly when the API would refuse to start with it."""
    try:
        code_settings(CORS_ALLOW_ORIGINS=origin)
        code_accepts = True
    except ConfigError:
        code_accepts = False
    assert terraform_accepts(tmp_path, "cors_allow_origins", [origin]) is code_accepts


@needs_terraform
def test_api_limits_takes_the_codes_limits_and_nothing_else(tmp_path: Path):
    """Every limit the code has (but the derived JOBS_MAX_UNFINISHED and the fixed
    RATE_LIMIT_STORE) may be set; anything else is refused, so a typo cannot pass silently."""
    everything = dict.fromkeys(API_LIMIT_NAMES, 1)
    assert terraform_accepts(tmp_path, "api_limits", everything)
    code_settings(**{name: "1" for name in API_LIMIT_NAMES})
    for wrong in (
        {"JOBS_MAX_UNFINISHED": 1},
        {"RATE_LIMIT_STORE": 1},
        {"RATE_LIMIT_WRITE_PER_MINUTE": 1},
        {"TODOS_MAX": -1},
        {"TODOS_MAX": 1.5},
    ):
        assert not terraform_accepts(tmp_path, "api_limits", wrong), wrong


@needs_terraform
@pytest.mark.parametrize(("value", "accepted"), [(1, True), (20, True), (0, False), (2.5, False)])
def test_jobs_queued_per_worker_thread_is_a_whole_number(
    tmp_path: Path, value: Any, accepted: bool
):
    assert terraform_accepts(tmp_path, "jobs_queued_per_worker_thread", value) is accepted


def test_checkov_finds_nothing_with_every_optional_part_on(tmp_path: Path):
    """The API keys' secrets, HTTPS rules and given subnets pass checkov too (the default run
    sees them only as count 0)."""
    values = tmp_path / "on.tfvars"
    values.write_text(
        "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in {"image_tag": "local", **EVERYTHING_ON}.items()
        )
    )
    report = run_checkov("--config-file", ".checkov.yaml", "--var-file", str(values))
    failed = report["results"]["failed_checks"]
    assert failed == [], [(f["check_id"], f["resource"]) for f in failed]
    checked = {c["resource"] for c in report["results"]["passed_checks"]}
    assert "aws_secretsmanager_secret.api_keys[0]" in checked

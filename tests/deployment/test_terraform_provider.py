"""ops/terraform evaluated by Terraform itself: fmt, validate, plans of every variable set an
operator uses, then apply and destroy, with the real hashicorp/aws provider against an
emulated account (a moto server on 127.0.0.1). tests/deployment/terraform_run.py says what
stands in for what; ``make terraform-check`` runs this file with checkov and the static ties
(test_terraform.py, test_first_apply.py), and ``make test`` runs it with everything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.deployment.terraform_run import (
    ACCOUNT_ID,
    MOTO_GAPS,
    REGION,
    SUBSTITUTE_DIR,
    TERRAFORM_DIR,
    TerraformFailed,
    Workspace,
    configured,
    moto_client,
    planned,
)
from tests.processes import MotoServer

pytestmark = pytest.mark.terraform

if shutil.which("terraform") is None:
    # CI's machine has Terraform: there, its absence is a failure, not a reason to skip.
    if os.environ.get("CI"):
        raise RuntimeError("terraform is not on PATH: the Terraform check cannot run")
    pytest.skip("no terraform binary here (install Terraform >= 1.11)", allow_module_level=True)

LAB_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/LabRole"
CERTIFICATE = f"arn:aws:acm:{REGION}:{ACCOUNT_ID}:certificate/11111111-2222-3333-4444-555555555555"
#: Minutes an apply or destroy against moto may take (moto's waits: about 2-3 minutes).
APPLY_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


def reset(moto: MotoServer) -> None:
    """An empty account again (moto's own reset API)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto.url}/moto-api/reset", method="POST"))


def client(moto: MotoServer, service: str) -> Any:
    return moto_client(service, moto.url)


@pytest.fixture(scope="module")
def workspace(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("terraform"), moto.url)
    ws.init()
    return ws


# --- fmt and validate --------------------------------------------------------------------------


def test_fmt_is_clean():
    result = subprocess.run(
        [
            "terraform",
            "fmt",
            "-check",
            "-recursive",
            "-diff",
            str(TERRAFORM_DIR),
            str(SUBSTITUTE_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_substitute_keeps_productions_terraform_and_aws_pins():
    """The check's versions.tf differs from production's by the docker provider alone."""

    def terraform_block(path: Path) -> dict[str, Any]:
        (block,) = hcl2.loads(path.read_text())["terraform"]
        return dict(block)

    production = terraform_block(TERRAFORM_DIR / "versions.tf")
    substitute = terraform_block(SUBSTITUTE_DIR / "versions.tf")
    assert production["required_version"] == substitute["required_version"]
    (prod_providers,) = production["required_providers"]
    (sub_providers,) = substitute["required_providers"]
    providers = {k for k in sub_providers if not k.startswith("__")}
    assert providers == {"aws"}
    assert sub_providers["aws"] == prod_providers["aws"]
    assert prod_providers["docker"]["source"] == '"kreuzwerker/docker"'  # hcl2 keeps quotes


def test_validate(workspace: Workspace):
    done = workspace.run("validate", "-json", "-no-color", check=False)
    report = json.loads(done.stdout)
    assert report["valid"], report["diagnostics"]


@pytest.mark.parametrize(
    ("file", "before", "after", "message"),
    [
        # What main shipped (c3da21a removed the data source ecr.tf still uses).
        (
            "providers.tf",
            'data "aws_caller_identity" "current" {}',
            "",
            "Reference to undeclared resource",
        ),
        # A misspelt argument.
        (
            "sqs.tf",
            "visibility_timeout_seconds =",
            "visibility_timeout_second =",
            "Unsupported argument",
        ),
        # A misspelt attribute of a resource.
        (
            "ecs.tf",
            "aws_db_instance.main.endpoint",
            "aws_db_instance.main.endpont",
            "Unsupported attribute",
        ),
    ],
)
def test_validate_fails_with_terraforms_own_message(
    tmp_path: Path, moto: MotoServer, file: str, before: str, after: str, message: str
):
    broken = tmp_path / "broken"
    shutil.copytree(
        TERRAFORM_DIR, broken, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
    )
    text = (broken / file).read_text()
    assert before in text
    (broken / file).write_text(text.replace(before, after, 1))
    ws = Workspace(tmp_path / "scratch", moto.url, source=broken)
    ws.init()
    done = ws.run("validate", "-no-color", check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


# --- Plans ---------------------------------------------------------------------------------------

#: name -> (variables, var file); every plan against the same empty account.
VARIABLE_SETS: dict[str, tuple[dict[str, Any], str | None]] = {
    "defaults": ({}, None),
    "learner-lab": ({"existing_task_role_arn": LAB_ROLE}, "learner-lab.tfvars"),
    "given-network": (
        {"certificate_arn": CERTIFICATE, "allowed_cidrs": ["203.0.113.0/24", "198.51.100.0/24"]},
        None,
    ),
    "api-keys": ({"api_keys_enabled": True}, None),
    "no-kms-key": ({"create_kms_key": False}, None),
}
#: Resources each set plans to create (a change here is a change of the deployment: say why).
EXPECTED_COUNTS = {
    "defaults": 56,
    "learner-lab": 48,
    "given-network": 60,
    "api-keys": 60,
    "no-kms-key": 54,
}
_plans: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def given_subnets(moto: MotoServer) -> list[str]:
    """Two subnets of a VPC of our own (not the default one) in two zones."""
    ec2 = client(moto, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    return [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{zone}"
        )["Subnet"]["SubnetId"]
        for i, zone in enumerate("ab")
    ]


def plan_of(workspace: Workspace, name: str, given_subnets: list[str]) -> dict[str, Any]:
    if name not in _plans:
        variables, var_file = VARIABLE_SETS[name]
        if name == "given-network":
            variables = {**variables, "subnet_ids": given_subnets}
        _plans[name] = workspace.plan(variables, var_file=var_file)
    return _plans[name]


@pytest.mark.parametrize("name", list(VARIABLE_SETS))
def test_plan(workspace: Workspace, given_subnets: list[str], name: str):
    plan = plan_of(workspace, name, given_subnets)
    created = planned(plan)
    print(f"\n{name}: {len(created)} to create")
    assert len(created) == EXPECTED_COUNTS[name], sorted(created)
    assert not planned(plan, ("update", "delete")), "an empty account has nothing to change"


@pytest.fixture
def plans(workspace: Workspace, given_subnets: list[str]):
    return lambda name: plan_of(workspace, name, given_subnets)


def test_the_given_network_is_used(plans, given_subnets: list[str]):
    created = planned(plans("given-network"))
    assert set(created["aws_db_subnet_group.main"]["subnet_ids"]) == set(given_subnets)
    assert created["aws_lb_listener.https[0]"]["certificate_arn"] == CERTIFICATE
    cidrs = {
        a["cidr_ipv4"]
        for k, a in created.items()
        if k.startswith("aws_vpc_security_group_ingress_rule.alb_")
    }
    assert cidrs == {"203.0.113.0/24", "198.51.100.0/24"}


# Item 1: the load balancer asks liveness, as the container health check does.
def test_the_load_balancer_checks_liveness_not_the_database(plans):
    created = planned(plans("defaults"))
    (check,) = created["aws_lb_target_group.api"]["health_check"]
    assert check["path"] == "/api/v1/health"
    assert check["matcher"] == "200"


# Item 2: a rollout's extra tasks fit the connection budget.
def test_rollouts_surge_by_one_api_task_and_no_worker(plans):
    created = planned(plans("defaults"))
    api, worker = created["aws_ecs_service.api"], created["aws_ecs_service.worker"]
    # 2 API tasks: 150 % is 3 tasks during a rollout (ECS rounds down), never 4.
    assert (api["deployment_maximum_percent"], api["deployment_minimum_healthy_percent"]) == (
        150,
        100,
    )
    assert (worker["deployment_maximum_percent"], worker["deployment_minimum_healthy_percent"]) == (
        100,
        0,
    )
    lab = planned(plans("learner-lab"))["aws_ecs_service.api"]
    assert lab["deployment_maximum_percent"] == 200  # one API task: 2 during a rollout


def test_a_scale_the_database_cannot_serve_during_a_rollout_fails_the_plan(workspace: Workspace):
    """The old defaults (6 workers) fit only if a rollout started no extra task:
    3 x 6 + 6 x 9 + 1 = 73 connections against the 68 a db.t4g.micro leaves."""
    with pytest.raises(TerraformFailed) as failed:
        workspace.plan({"worker_max_count": 6})
    message = re.sub(r"\s+", " ", str(failed.value))
    assert "Resource precondition failed" in message
    assert "during a rollout, the tasks need 73 database connections" in message


# Item 4: the kept final snapshot never depends on the key a destroy deletes.
def test_the_database_uses_the_aws_managed_key(plans):
    for name in ("defaults", "no-kms-key"):
        expressions = configured(plans(name), "aws_db_instance.main")["expressions"]
        assert "kms_key_id" not in expressions
        assert "performance_insights_kms_key_id" not in expressions
        created = planned(plans(name))["aws_db_instance.main"]
        assert created["storage_encrypted"] is True
        assert created["skip_final_snapshot"] is False


# Item 5: without a customer key, nothing asks for one.
def test_without_the_kms_key_every_service_uses_its_own_encryption(plans):
    created = planned(plans("no-kms-key"))
    assert not [a for a in created if a.startswith(("aws_kms_key", "aws_kms_alias"))]
    for kind in ("api", "worker"):
        (encryption,) = created[f'aws_ecr_repository.app["{kind}"]']["encryption_configuration"]
        assert encryption["encryption_type"] == "AES256"
    assert created["aws_sns_topic.alarms"].get("kms_master_key_id") in (None, "")
    for address, values in created.items():
        if address.startswith("aws_cloudwatch_log_group."):
            assert values.get("kms_key_id") in (None, ""), address
    assert planned(plans("learner-lab")).keys().isdisjoint({"aws_kms_key.main[0]"})


# Item 6: nothing starts before the policies it runs with.
def test_tasks_start_only_after_their_roles_policies(plans):
    plan = plans("defaults")
    assert {"aws_iam_role_policy.api", "aws_iam_role_policy.execution"} <= set(
        configured(plan, "terraform_data.migrate")["depends_on"]
    )
    assert {"aws_iam_role_policy.worker", "aws_iam_role_policy.execution"} <= set(
        configured(plan, "aws_ecs_service.worker")["depends_on"]
    )
    assert {"aws_iam_role_policy.api", "aws_iam_role_policy.execution"} <= set(
        configured(plan, "aws_ecs_service.api")["depends_on"]
    )


# Item 7: apply waits for the rollout.
def test_apply_waits_for_steady_services(plans):
    created = planned(plans("defaults"))
    assert created["aws_ecs_service.api"]["wait_for_steady_state"] is True
    assert created["aws_ecs_service.worker"]["wait_for_steady_state"] is True


# Item 10: the database's log groups are ours.
def test_the_database_log_groups_are_managed(plans):
    created = planned(plans("defaults"))
    for log in ("postgresql", "upgrade"):
        group = created[f'aws_cloudwatch_log_group.rds["{log}"]']
        assert group["name"] == f"/aws/rds/instance/taskoverflow/{log}"
        assert group["retention_in_days"] == 365
    assert (
        "aws_cloudwatch_log_group.rds"
        in configured(plans("defaults"), "aws_db_instance.main")["depends_on"]
    )
    assert (
        planned(plans("learner-lab"))['aws_cloudwatch_log_group.rds["postgresql"]'][
            "retention_in_days"
        ]
        == 7
    )


def test_the_learner_lab_uses_labrole_everywhere_and_no_customer_key(plans):
    created = planned(plans("learner-lab"))
    assert not [a for a in created if a.startswith("aws_iam_role")]
    for task in ("api", "worker", "migrate"):
        definition = created[f"aws_ecs_task_definition.{task}"]
        assert definition["task_role_arn"] == definition["execution_role_arn"] == LAB_ROLE
    assert created["aws_db_instance.main"]["storage_type"] == "gp2"


# --- build_images = false (item 8) ------------------------------------------------------------


def test_build_images_false_follows_the_documented_order(moto: MotoServer, tmp_path: Path):
    """ops/README.md: repositories first (-target), then the push, then the apply. Before the
    push, the plan fails at once naming the missing image, before anything is created."""
    reset(moto)
    ws = Workspace(tmp_path, moto.url)
    ws.init()
    variables = {"build_images": False, "image_tag": "v1"}
    with pytest.raises(TerraformFailed) as failed:
        ws.plan(variables)
    assert "reading ECR Images: couldn't find resource" in str(failed.value)
    assert 'data.aws_ecr_image.app["api"]' in str(failed.value)
    assert ws.state() == []  # nothing created

    ws.run(
        "apply",
        "-auto-approve",
        "-no-color",
        "-target=aws_ecr_repository.app",
        *ws.var_args(variables),
        timeout=300,
    )
    ecr = client(moto, "ecr")
    digests = {}
    for kind in ("api", "worker"):
        # What `docker push` registers: a schema 2 manifest (its digest is what ECR returns).
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 2,
                    "digest": "sha256:" + hashlib.sha256(kind.encode()).hexdigest(),
                },
                "layers": [],
            }
        )
        pushed = ecr.put_image(
            repositoryName=f"taskoverflow-{kind}", imageTag="v1", imageManifest=manifest
        )
        digests[kind] = pushed["image"]["imageId"]["imageDigest"]
    plan = ws.plan(variables)
    # The digests are read at plan time (the task definitions pin them; their JSON is known
    # only after the apply, with the database's endpoint).
    read = {
        r["address"]: r["values"]
        for r in plan["prior_state"]["values"]["root_module"]["resources"]
        if r["mode"] == "data"
    }
    for kind in ("api", "worker"):
        assert read[f'data.aws_ecr_image.app["{kind}"]']["image_digest"] == digests[kind]
    assert "aws_ecs_task_definition.api" in planned(plan)
    reset(moto)


# --- apply and destroy ---------------------------------------------------------------------------


@pytest.mark.parametrize("address", list(MOTO_GAPS))
def test_each_resource_left_out_is_still_a_gap_in_moto(moto: MotoServer, address: str):
    """Listed gaps are moto's own: once moto supports one, this fails and it goes back in."""
    assert MOTO_GAPS[address].still_missing(moto.url), (
        f"moto now supports {address}: take it off MOTO_GAPS"
    )


def test_apply_and_destroy_the_defaults(moto: MotoServer, workspace: Workspace):
    """Every planned resource is created (but for MOTO_GAPS), what the items of the review
    changed is what the account holds, the API keys stay out of the state, and the operator's
    destroy (deletion_protection off, apply, destroy) leaves nothing behind."""
    reset(moto)
    left_out = {a for a, gap in MOTO_GAPS.items() if gap.left_out}
    expected = {
        a for a in planned(workspace.plan({})) if re.sub(r"\[[^\]]*\]$", "", a) not in left_out
    }
    workspace.leave_out_moto_gaps()
    workspace.apply({}, timeout=APPLY_TIMEOUT_S)
    state = {a for a in workspace.state() if not a.startswith("data.")}
    assert state == expected

    iam = client(moto, "iam")
    # Item 3: the console's backlog reads the DLQ's depth.
    api_policy = json.loads(
        json.dumps(
            iam.get_role_policy(RoleName="taskoverflow-api", PolicyName="send-jobs")[
                "PolicyDocument"
            ]
        )
    )
    dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:taskoverflow_ical_dlq"
    granted = [s for s in api_policy["Statement"] if dlq_arn in _list(s["Resource"])]
    assert any("sqs:GetQueueAttributes" in _list(s["Action"]) for s in granted)
    # Item 9: ECR decrypts images itself; the execution role has no key permission.
    execution = iam.get_role_policy(RoleName="taskoverflow-execution", PolicyName="start-tasks")[
        "PolicyDocument"
    ]
    assert not [
        a for s in execution["Statement"] for a in _list(s["Action"]) if a.startswith("kms:")
    ]
    # Item 9: the services' statements in the key policy name this account.
    kms = client(moto, "kms")
    (alias,) = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == "alias/taskoverflow"]
    policy = json.loads(
        kms.get_key_policy(KeyId=alias["TargetKeyId"], PolicyName="default")["Policy"]
    )
    services = [s for s in policy["Statement"] if "Service" in s["Principal"]]
    assert services
    assert all("Condition" in s and ACCOUNT_ID in json.dumps(s["Condition"]) for s in services)
    # Item 10: RDS's log groups exist with the stack's retention.
    logs = client(moto, "logs")
    groups = {
        g["logGroupName"]: g
        for g in logs.describe_log_groups(logGroupNamePrefix="/aws/rds/")["logGroups"]
    }
    assert groups["/aws/rds/instance/taskoverflow/postgresql"]["retentionInDays"] == 365

    # Item 9: the first API key is written write-only: nowhere in the state.
    workspace.apply(
        {"api_keys_enabled": True, "deletion_protection": False}, timeout=APPLY_TIMEOUT_S
    )
    secrets = client(moto, "secretsmanager")
    names = {s["Name"]: s["ARN"] for s in secrets.list_secrets()["SecretList"]}
    (initial,) = [
        arn for name, arn in names.items() if name.startswith("taskoverflow-initial-api-key-")
    ]
    (accepted,) = [arn for name, arn in names.items() if name.startswith("taskoverflow-api-keys-")]
    key = secrets.get_secret_value(SecretId=initial)["SecretString"]
    assert len(key) == 48
    assert (
        secrets.get_secret_value(SecretId=accepted)["SecretString"]
        == "initial:" + hashlib.sha256(key.encode()).hexdigest()
    )
    state_text = (workspace.dir / "terraform.tfstate").read_text()
    assert key not in state_text
    assert hashlib.sha256(key.encode()).hexdigest() not in state_text

    # Every output ops/README.md tells the operator to read has a value.
    for name, raw in readme_outputs():
        shown = workspace.run("output", "-raw" if raw else "-json", name).stdout.strip()
        assert shown not in ("", "null"), name

    workspace.destroy(
        {"api_keys_enabled": True, "deletion_protection": False}, timeout=APPLY_TIMEOUT_S
    )
    assert [a for a in workspace.state() if not a.startswith("data.")] == []
    assert client(moto, "sqs").list_queues().get("QueueUrls", []) == []
    # Deleted ECS services and clusters stay visible as INACTIVE (on AWS too).
    ecs = client(moto, "ecs")
    for service in ecs.describe_services(
        cluster="taskoverflow", services=["taskoverflow-api", "taskoverflow-worker"]
    )["services"]:
        assert service["status"] == "INACTIVE", service["serviceName"]
    assert {c["status"] for c in ecs.describe_clusters(clusters=["taskoverflow"])["clusters"]} <= {
        "INACTIVE"
    }
    assert client(moto, "rds").describe_db_instances()["DBInstances"] == []
    assert client(moto, "ecr").describe_repositories()["repositories"] == []
    # The final snapshot is kept (and encrypted with aws/rds, which no destroy deletes).
    snapshots = client(moto, "rds").describe_db_snapshots()["DBSnapshots"]
    assert [
        s["DBSnapshotIdentifier"]
        for s in snapshots
        if s["DBSnapshotIdentifier"].startswith("taskoverflow-final-")
    ]


def readme_outputs() -> list[tuple[str, bool]]:
    """(name, -raw?) of every `terraform ... output` in ops/README.md."""
    text = Path(TERRAFORM_DIR.parent, "README.md").read_text()
    found = re.findall(r"terraform(?: -chdir=ops/terraform)? output (-raw |-json )?([a-z_]+)", text)
    names = {(name, flag.strip() != "-json") for flag, name in found}
    assert {n for n, _ in names} >= {"migration", "api_url", "api_keys_secret_arn"}
    return sorted(names)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]

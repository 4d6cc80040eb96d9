"""Terraform itself, with the real hashicorp/aws provider, against an emulated AWS account.

``Workspace`` is ops/terraform copied to a scratch folder, the way an operator runs it but
for three files of ``tests/deployment/terraform_substitute``:

- ``versions.tf`` and ``images.tf`` take the place of the production files that need the
  kreuzwerker/docker provider (not installable offline, and useless without a Docker
  engine): the images are pushed through the emulated ECR's API instead;
- ``moto_override.tf`` points the provider at a moto server on 127.0.0.1.

Every other file is production's, byte for byte. ``terraform init`` installs the AWS provider
from a local filesystem mirror when this machine has one (``TERRAFORM_PROVIDER_MIRROR``, or
the usual places below), else from the registry, as a user online would.

``MOTO_GAPS`` lists what moto cannot do (each with the reason, and a probe that shows moto
still lacks it): the apply's override file leaves those resources out (count = 0), or for
the ECS services only drops the wait for a steady state, and changes nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from tests.services import ROOT

TERRAFORM_DIR = Path(ROOT, "ops", "terraform")
SUBSTITUTE_DIR = Path(__file__).parent / "terraform_substitute"
#: Production files the substitute replaces (everything that needs the docker provider).
REPLACED = ("versions.tf", "images.tf")
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's
#: Where a machine image keeps a provider mirror (registry.terraform.io/hashicorp/aws/...).
MIRROR_CANDIDATES = (
    "/opt/tf-plugins",
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    str(Path.home() / ".terraform.d" / "plugins"),
)


def provider_mirror() -> Path | None:
    """The first folder holding a hashicorp/aws provider in the mirror layout, if any."""
    wanted = os.environ.get("TERRAFORM_PROVIDER_MIRROR")
    for candidate in ([wanted] if wanted else []) + list(MIRROR_CANDIDATES):
        if Path(candidate, "registry.terraform.io", "hashicorp", "aws").is_dir():
            return Path(candidate)
    return None


def write_cli_config(path: Path) -> Path:
    """A Terraform CLI configuration: the AWS provider from the mirror when there is one
    (everything else from the registry), else the registry alone."""
    mirror = provider_mirror()
    if mirror is None:
        path.write_text("# no local provider mirror: providers come from the registry\n")
    else:
        aws = "registry.terraform.io/hashicorp/aws"
        path.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = ["{aws}"]\n  }}\n'
            f'  direct {{\n    exclude = ["{aws}"]\n  }}\n'
            "}\n"
        )
    return path


# --- What moto cannot do ---------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """What the apply changes about a resource for moto, why, and how to see that moto
    still lacks what the resource needs."""

    reason: str
    #: Arguments the override sets (with ``left_out``, beside count = 0: references to
    #: another gap's resource).
    override: Mapping[str, str]
    #: Returns True while moto still lacks it (boto3 against moto).
    still_missing: Callable[[str], bool]
    #: The resource is not created at all (else it is, with ``override`` applied).
    left_out: bool = True


def moto_client(service: str, endpoint: str) -> Any:
    """A boto3 client of the moto server at ``endpoint`` (its fixed account, any key)."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
    )


def _redrive_allow_policy_missing(endpoint: str) -> bool:
    sqs = moto_client("sqs", endpoint)
    url = sqs.create_queue(QueueName="gap-probe-dlq")["QueueUrl"]
    try:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedriveAllowPolicy"])
    except sqs.exceptions.InvalidAttributeName:
        return True
    finally:
        sqs.delete_queue(QueueUrl=url)
    return False


def _gap_probe_task_definition(
    ecs: Any, family: str = "gap-probe", container_memory: bool = True
) -> None:
    """A cluster and a Fargate task definition to probe moto's ECS with; without
    ``container_memory`` the container leaves its memory to the task, as ours do."""
    ecs.create_cluster(clusterName="gap-probe")
    container = {"name": "x", "image": "x", "command": ["true"]}
    if container_memory:
        container.update(cpu=256, memory=512)
    ecs.register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[container],
    )


def _autoscaling_tags_missing(endpoint: str) -> bool:
    ecs = moto_client("ecs", endpoint)
    _gap_probe_task_definition(ecs)
    ecs.create_service(
        cluster="gap-probe", serviceName="gap-probe", taskDefinition="gap-probe", desiredCount=0
    )
    scaling = moto_client("application-autoscaling", endpoint)
    arn = scaling.register_scalable_target(
        ServiceNamespace="ecs",
        ResourceId="service/gap-probe/gap-probe",
        ScalableDimension="ecs:service:DesiredCount",
        MinCapacity=1,
        MaxCapacity=2,
    )["ScalableTargetARN"]
    try:
        scaling.list_tags_for_resource(ResourceARN=arn)
    except Exception:
        return True
    finally:
        scaling.deregister_scalable_target(
            ServiceNamespace="ecs",
            ResourceId="service/gap-probe/gap-probe",
            ScalableDimension="ecs:service:DesiredCount",
        )
    return False


def _fargate_run_task_fails(endpoint: str) -> bool:
    """RunTask of a Fargate task definition whose container has no memory of its own."""
    ecs = moto_client("ecs", endpoint)
    _gap_probe_task_definition(ecs, "gap-probe-task-memory", container_memory=False)
    ec2 = moto_client("ec2", endpoint)
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    try:
        ecs.run_task(
            cluster="gap-probe",
            taskDefinition="gap-probe-task-memory",
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}
            },
        )
    except Exception:
        return True
    return False


def _services_never_run(endpoint: str) -> bool:
    ecs = moto_client("ecs", endpoint)
    _gap_probe_task_definition(ecs)
    ecs.create_service(
        cluster="gap-probe", serviceName="gap-probe-1", taskDefinition="gap-probe", desiredCount=1
    )
    for _ in range(3):
        (service,) = ecs.describe_services(cluster="gap-probe", services=["gap-probe-1"])[
            "services"
        ]
    ecs.delete_service(cluster="gap-probe", service="gap-probe-1", force=True)
    return bool(service["runningCount"] != service["desiredCount"])


MOTO_GAPS: dict[str, Gap] = {
    "aws_sqs_queue_redrive_allow_policy.jobs_dlq": Gap(
        "moto's SQS does not know the RedriveAllowPolicy attribute (GetQueueAttributes answers"
        " InvalidAttributeName), so the provider waits forever for it to appear",
        {},
        _redrive_allow_policy_missing,
    ),
    "aws_appautoscaling_target.worker": Gap(
        "moto's Application Auto Scaling has no ListTagsForResource (HTTP 500); the provider"
        " reads every target's tags after creating it and retries until it times out",
        {},
        _autoscaling_tags_missing,
    ),
    "aws_appautoscaling_policy.worker_backlog": Gap(
        "needs aws_appautoscaling_target.worker (above)",
        {
            "service_namespace": '"ecs"',
            "resource_id": '"service/none/none"',
            "scalable_dimension": '"ecs:service:DesiredCount"',
        },
        _autoscaling_tags_missing,
    ),
    "terraform_data.migrate": Gap(
        "runs ops/aws/run-migration.sh (the AWS CLI's ecs run-task, wait, describe-tasks);"
        " moto's RunTask fails with HTTP 500 (a TypeError) for a Fargate task whose containers"
        " leave their memory to the task, as ours do. The script itself runs against a fake"
        " CLI in tests/deployment/test_first_apply.py, and `make aws-parity` runs the migration"
        " task definition. Taking it off this list needs ops/aws beside the workspace and the"
        " AWS CLI on the PATH",
        {},
        _fargate_run_task_fails,
    ),
    "aws_ecs_service.api": Gap(
        "moto's ECS services report runningCount = $MOTO_ECS_SERVICE_RUNNING (0) whatever the"
        " desired count, so wait_for_steady_state would wait forever: the service is created,"
        " without the wait",
        {"wait_for_steady_state": "false"},
        _services_never_run,
        left_out=False,
    ),
    "aws_ecs_service.worker": Gap(
        "as aws_ecs_service.api",
        {"wait_for_steady_state": "false"},
        _services_never_run,
        left_out=False,
    ),
}


def gaps_override() -> str:
    blocks = []
    for address, gap in MOTO_GAPS.items():
        kind, name = address.split(".")
        lines = (["  count = 0"] if gap.left_out else []) + [
            f"  {k} = {v}" for k, v in gap.override.items()
        ]
        blocks.append(f'resource "{kind}" "{name}" {{\n' + "\n".join(lines) + "\n}\n")
    return "# what moto cannot do (tests/deployment/terraform_run.py MOTO_GAPS)\n" + "\n".join(
        blocks
    )


# --- The workspace ---------------------------------------------------------------------------


class TerraformFailed(AssertionError):
    pass


class Workspace:
    """ops/terraform with the substitute files, in ``scratch``, against the moto at ``endpoint``."""

    def __init__(self, scratch: Path, endpoint: str, source: Path = TERRAFORM_DIR) -> None:
        self.dir = scratch / "terraform"
        shutil.copytree(
            source,
            self.dir,
            ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", *REPLACED),
        )
        for path in SUBSTITUTE_DIR.iterdir():
            if path.suffix in (".tf", ".py"):
                shutil.copy(path, self.dir / path.name)
        self.cli_config = write_cli_config(scratch / "terraformrc")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))},
            "TF_CLI_CONFIG_FILE": str(self.cli_config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "TF_VAR_moto_endpoint": endpoint,
            "TF_VAR_substitute_python": sys.executable,
            # For push_image.py (local-exec): the same account as the provider's.
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "moto",
            "AWS_SECRET_ACCESS_KEY": "moto",
            "AWS_REGION": REGION,
        }

    def run(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["terraform", *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise TerraformFailed(
                f"terraform {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stderr}\n{done.stdout[-4000:]}"
            )
        return done

    def init(self) -> None:
        self.run("init", "-backend=false", "-no-color", timeout=600)

    @staticmethod
    def var_args(variables: Mapping[str, Any]) -> list[str]:
        values = {"image_tag": "check", **variables}
        return [f"-var={k}={_hcl(v)}" for k, v in values.items()]

    def plan(
        self, variables: Mapping[str, Any], *, var_file: str | None = None, timeout: float = 300
    ) -> dict[str, Any]:
        """``terraform plan`` then ``terraform show -json`` of it; raises with Terraform's
        own message when the plan fails."""
        files = [f"-var-file={var_file}"] if var_file else []
        plan_file = "check.tfplan"
        self.run(
            "plan",
            "-no-color",
            "-lock=false",
            f"-out={plan_file}",
            *files,
            *self.var_args(variables),
            timeout=timeout,
        )
        shown = self.run("show", "-json", plan_file, timeout=120)
        return json.loads(shown.stdout)

    def apply(self, variables: Mapping[str, Any], timeout: float) -> None:
        self.run("apply", "-auto-approve", "-no-color", *self.var_args(variables), timeout=timeout)

    def destroy(self, variables: Mapping[str, Any], timeout: float) -> None:
        self.run(
            "destroy", "-auto-approve", "-no-color", *self.var_args(variables), timeout=timeout
        )

    def state(self) -> list[str]:
        done = self.run("state", "list", check=False)
        return done.stdout.split() if done.returncode == 0 else []

    def leave_out_moto_gaps(self) -> None:
        (self.dir / "moto_gaps_override.tf").write_text(gaps_override())


def _hcl(value: Any) -> str:
    """A -var value: strings as they are, everything else as JSON (valid HCL)."""
    return value if isinstance(value, str) else json.dumps(value)


# --- Reading a plan --------------------------------------------------------------------------


def planned(plan: Mapping[str, Any], actions: tuple[str, ...] = ("create",)) -> dict[str, Any]:
    """Address -> planned values (after) of every managed resource with one of ``actions``."""
    found = {}
    for change in plan.get("resource_changes", []):
        if change.get("mode") != "managed":
            continue
        if any(action in change["change"]["actions"] for action in actions):
            found[change["address"]] = change["change"]["after"] or {}
    return found


def configured(plan: Mapping[str, Any], address: str) -> dict[str, Any]:
    """The configuration of one resource as Terraform read it (depends_on, expressions)."""
    for resource in plan["configuration"]["root_module"]["resources"]:
        if resource["address"] == address:
            return dict(resource)
    raise KeyError(address)

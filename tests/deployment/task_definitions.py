"""The ECS container definitions, rendered from ops/terraform by code, never retyped.

Terraform computes a container definition from variables, locals and attributes that only
AWS knows after an apply (the database endpoint, the secret's ARN, the image digests). To
render one here, the configuration is copied to a scratch folder, each of those attributes
is written into its resource or data block with a local stand-in value (what AWS would
have returned), and tfparse (Trivy's Terraform evaluator) evaluates the rest exactly as
written: merge(), for expressions, jsonencode() and all. Nothing else of the configuration
is changed, and a value the evaluator could not resolve fails the rendering.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tfparse

from tests.services import ROOT

TERRAFORM = Path(ROOT, "ops", "terraform")
_SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"  # noqa: S105 (an ARN prefix)


@dataclass(frozen=True)
class AwsFacts:
    """Attributes AWS computes at apply time, as a local run provides them."""

    db_endpoint: str  # aws_db_instance.main.endpoint: "host:port"
    db_secret_arn: str  # aws_db_instance.main.master_user_secret[0].secret_arn
    repository_url: str  # aws_ecr_repository.app[kind].repository_url, {kind} filled in
    image_digests: Mapping[str, str]  # kind -> "sha256:..." of the image pushed for it
    # data.aws_vpc.default[0].cidr_block: every region's default VPC is 172.31.0.0/16
    vpc_cidr: str = "172.31.0.0/16"
    # data.aws_subnet.given[id].cidr_block, for renderings that set subnet_ids
    subnet_cidrs: Mapping[str, str] = field(default_factory=dict)
    # aws_secretsmanager_secret.{api_keys,initial_api_key}[0].arn (api_keys_enabled)
    api_keys_secret_arn: str = _SECRET_ARN + "taskoverflow-api-keys-AbCdEf"
    initial_api_key_secret_arn: str = _SECRET_ARN + "taskoverflow-initial-api-key-GhIjKl"
    # data.aws_secretsmanager_random_password.initial_api_key[0].random_password
    initial_api_key: str = "InitialKeyStandIn0123456789abcdefghijklmnopqrstuv"


def _hcl(value: Any) -> str:
    return json.dumps(value)  # JSON strings, lists and objects are valid HCL expressions


def _inject(text: str, block: str, attributes: Mapping[str, str]) -> str:
    """Write ``attributes`` (name -> HCL expression) as the first lines of ``block``."""
    pattern = re.compile(r"^" + re.escape(block) + r"\s*\{\s*$", re.M)
    match = pattern.search(text)
    if match is None:
        raise LookupError(f"ops/terraform has no block {block}")
    lines = "".join(f"\n  {name} = {expression}" for name, expression in attributes.items())
    return text[: match.end()] + lines + text[match.end() :]


def render(facts: AwsFacts, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything tfparse evaluates, with ``facts`` standing in for AWS and ``variables``
    (name -> value) for a tfvars file."""
    with tempfile.TemporaryDirectory(prefix="taskoverflow-tf-") as scratch:
        copy = Path(scratch, "terraform")
        shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
        stand_ins = {
            'resource "aws_db_instance" "main"': {
                "endpoint": _hcl(facts.db_endpoint),
                "master_user_secret": _hcl([{"secret_arn": facts.db_secret_arn}]),
            },
            'resource "aws_ecr_repository" "app"': {
                "repository_url": _hcl(facts.repository_url.replace("{kind}", "${each.key}")),
            },
            # Images are pinned by digest: from the push (build_images) or the registry.
            'resource "docker_registry_image" "app"': {
                "sha256_digest": f"{_hcl(dict(facts.image_digests))}[each.key]",
            },
            'data "aws_ecr_image" "app"': {
                "image_digest": f"{_hcl(dict(facts.image_digests))}[each.key]",
            },
            # The load balancer's network (TRUSTED_PROXIES).
            'data "aws_vpc" "default"': {"cidr_block": _hcl(facts.vpc_cidr)},
            'data "aws_subnet" "given"': {
                "cidr_block": f"{_hcl(dict(facts.subnet_cidrs))}[each.value]",
            },
            # API keys (api_keys_enabled): the secrets and Secrets Manager's generator.
            'resource "aws_secretsmanager_secret" "api_keys"': {
                "arn": _hcl(facts.api_keys_secret_arn),
            },
            'resource "aws_secretsmanager_secret" "initial_api_key"': {
                "arn": _hcl(facts.initial_api_key_secret_arn),
            },
            'data "aws_secretsmanager_random_password" "initial_api_key"': {
                "random_password": _hcl(facts.initial_api_key),
            },
        }
        for path in copy.glob("*.tf"):
            text = path.read_text()
            for block, attributes in stand_ins.items():
                if re.search(r"^" + re.escape(block) + r"\s*\{", text, re.M):
                    text = _inject(text, block, attributes)
            path.write_text(text)
        tfvars = copy / "render.tfvars"
        values = {"image_tag": "local", **(variables or {})}
        tfvars.write_text("".join(f"{k} = {_hcl(v)}\n" for k, v in values.items()))
        return tfparse.load_from_path(str(copy), vars_paths=[tfvars.name], allow_downloads=False)


def _find(parsed: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    for block in parsed.get(kind, []):
        if block["__tfmeta"]["path"].endswith(f"{kind}.{name}"):
            return block
    raise LookupError(f"{kind}.{name} not found")


def container_definitions(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Task family suffix ("api", "worker", "migrate") -> its one container definition."""
    found: dict[str, dict[str, Any]] = {}
    for task in ("api", "worker", "migrate"):
        block = _find(parsed, "aws_ecs_task_definition", task)
        raw = block.get("container_definitions")
        if not isinstance(raw, str):
            raise ValueError(f"aws_ecs_task_definition.{task}: container_definitions unresolved")
        (definition,) = json.loads(raw)
        _no_unknowns(definition, f"aws_ecs_task_definition.{task}")
        found[task] = definition
    return found


def _no_unknowns(value: Any, where: str) -> None:
    """A None anywhere means an attribute nothing stood in for: refuse to run with it."""
    if value is None:
        raise ValueError(f"{where}: a value could not be resolved")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_unknowns(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_unknowns(item, f"{where}[{index}]")


def resource(parsed: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """One evaluated resource or data block (attributes by name)."""
    return _find(parsed, kind, name)


def local_values(parsed: dict[str, Any]) -> dict[str, Any]:
    """Every local value, merged over the configuration's locals blocks."""
    merged: dict[str, Any] = {}
    for block in parsed.get("locals", []):
        merged.update({k: v for k, v in block.items() if k not in ("__tfmeta", "id")})
    return merged

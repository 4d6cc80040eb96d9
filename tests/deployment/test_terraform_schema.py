"""Every resource, data source and provider block in ops/terraform against the real provider schema.

``terraform validate`` needs the providers, which cannot be downloaded here; the schemas in
ops/terraform_schema/ were extracted from the CDK for Terraform prebuilt bindings of the pinned
provider versions (see ops/terraform_schema/extract.py). For each block this checks that the type
exists, that every argument set is one of that type's arguments (or a meta-argument), that every
nested block (``dynamic "x"`` included) exists at that level, recursively, that blocks are written
as blocks and arguments with ``=``, and that required arguments and blocks are present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "ops" / "terraform"
SCHEMA_DIR = ROOT / "ops" / "terraform_schema"
TF_FILES = sorted(TERRAFORM_DIR.glob("*.tf"))

# {"arguments": [...], "blocks": {name: Body}, "required"?: [...]} or {"opaque": True}
Body = dict[str, Any]

OPAQUE: Body = {"opaque": True}
_CONDITION: Body = {
    "arguments": ["condition", "error_message"],
    "blocks": {},
    "required": ["condition", "error_message"],
}
# Terraform's own meta-arguments (https://developer.hashicorp.com/terraform/language/meta-arguments).
_LIFECYCLE: Body = {
    "arguments": [
        "create_before_destroy",
        "ignore_changes",
        "prevent_destroy",
        "replace_triggered_by",
    ],
    "blocks": {"precondition": _CONDITION, "postcondition": _CONDITION},
}
META: dict[str, Body] = {
    "resource": {
        "arguments": ["count", "depends_on", "for_each", "provider"],
        # provisioner "<type>" and connection take their type's arguments: not checked.
        "blocks": {"lifecycle": _LIFECYCLE, "provisioner": OPAQUE, "connection": OPAQUE},
    },
    "data": {
        "arguments": ["count", "depends_on", "for_each", "provider"],
        "blocks": {"lifecycle": {"arguments": [], "blocks": _LIFECYCLE["blocks"]}},
    },
    "provider": {"arguments": ["alias"], "blocks": {}},
}
# Types built into Terraform itself (provider terraform.io/builtin/terraform).
BUILTIN: dict[str, dict[str, Body]] = {
    "resource": {"terraform_data": {"arguments": ["input", "triggers_replace"], "blocks": {}}},
    "data": {
        "terraform_remote_state": {
            "arguments": ["backend", "config", "defaults", "workspace"],
            "blocks": {},
            "required": ["backend"],
        },
    },
}
# SDKv2 blocks in "attributes as blocks" mode may also be written `name = [...]`.
ATTRIBUTES_AS_BLOCKS = {
    ("aws_security_group", "ingress"),
    ("aws_security_group", "egress"),
    ("aws_default_security_group", "ingress"),
    ("aws_default_security_group", "egress"),
    ("aws_network_acl", "ingress"),
    ("aws_network_acl", "egress"),
    ("aws_default_network_acl", "ingress"),
    ("aws_default_network_acl", "egress"),
    ("aws_route_table", "route"),
    ("aws_default_route_table", "route"),
}
DYNAMIC_ARGUMENTS = {"for_each", "iterator", "labels", "content"}


def load_schemas() -> dict[str, Any]:
    """Every provider's schema file, merged: {"resource": {type: Body}, "data": ..., ...}."""
    merged: dict[str, Any] = {
        "resource": dict(BUILTIN["resource"]),
        "data": dict(BUILTIN["data"]),
        "provider": {},
        "versions": {},
    }
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        merged["resource"].update(schema["resources"])
        merged["data"].update(schema["data_sources"])
        merged["provider"][schema["provider"].split("/")[1]] = schema["provider_config"]
        merged["versions"][schema["provider"]] = schema["version"]
    return merged


SCHEMAS = load_schemas()


def _label(label: str) -> str:
    """hcl2 keeps the quotes of block labels: '"aws_lb"' -> 'aws_lb'."""
    return label.strip('"')


def _is_block(value: Any) -> bool:
    """hcl2 marks block bodies (not object or list-of-object argument values) with __is_block__;
    a labelled block (provisioner "local-exec") is a list of {label: body}."""

    def marked(item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        return "__is_block__" in item or (len(item) == 1 and marked(next(iter(item.values()))))

    return isinstance(value, list) and bool(value) and all(marked(v) for v in value)


def check_body(body: dict[str, Any], schema: Body, where: str, type_name: str = "") -> list[str]:
    """Problems with one block body against its schema, nested blocks included."""
    if schema.get("opaque"):
        return []
    arguments, blocks = set(schema["arguments"]), schema["blocks"]
    problems: list[str] = []
    present: set[str] = set()
    for key, value in body.items():
        if key.startswith("__") and key.endswith("__"):  # hcl2's __is_block__, __comments__
            continue
        if key == "dynamic":
            for entry in value:
                for label, dynamic in entry.items():
                    name = _label(label)
                    present.add(name)
                    if name not in blocks:
                        problems.append(f'{where}: unknown block dynamic "{name}"')
                        continue
                    for extra in sorted(set(dynamic) - DYNAMIC_ARGUMENTS - {"__is_block__"}):
                        if not (extra.startswith("__") and extra.endswith("__")):
                            problems.append(f'{where}.dynamic "{name}": unknown argument {extra}')
                    for content in dynamic.get("content", []):
                        problems += check_body(content, blocks[name], f"{where}.{name}")
            continue
        present.add(key)
        if _is_block(value):
            if key in blocks:
                for nested in value:
                    problems += check_body(nested, blocks[key], f"{where}.{key}")
            elif key in arguments:
                problems.append(f"{where}: {key} is an argument: set it with {key} = ...")
            else:
                problems.append(f"{where}: unknown block {key}")
        elif key in blocks:
            if (type_name, key) not in ATTRIBUTES_AS_BLOCKS:
                problems.append(f"{where}: {key} is a block: write {key} {{ ... }}, not =")
        elif key not in arguments:
            problems.append(f"{where}: unknown argument {key}")
    problems += [
        f"{where}: missing required {name}"
        for name in schema.get("required", [])
        if name not in present
    ]
    return problems


def _with_meta(schema: Body, meta: Body) -> Body:
    return {
        **schema,
        "arguments": [*schema["arguments"], *meta["arguments"]],
        "blocks": {**schema["blocks"], **meta["blocks"]},
    }


def check_config(config: dict[str, Any], source: str) -> list[str]:
    """Problems in every resource, data and provider block of one parsed .tf file."""
    problems: list[str] = []
    for kind in ("resource", "data"):
        for entry in config.get(kind, []):
            for type_label, instances in entry.items():
                type_name = _label(type_label)
                for name_label, body in instances.items():
                    where = f"{source}: {kind} {type_name}.{_label(name_label)}"
                    schema = SCHEMAS[kind].get(type_name)
                    if schema is None:
                        problems.append(f"{where}: unknown {kind} type {type_name}")
                    else:
                        schema = _with_meta(schema, META[kind])
                        problems += check_body(body, schema, where, type_name)
    for entry in config.get("provider", []):
        for name_label, body in entry.items():
            name = _label(name_label)
            where = f"{source}: provider {name}"
            if name not in SCHEMAS["provider"]:
                problems.append(f"{where}: no schema for provider {name}")
            else:
                schema = _with_meta(SCHEMAS["provider"][name], META["provider"])
                problems += check_body(body, schema, where)
    return problems


def _satisfies(version: str, constraint: str) -> bool:
    """Terraform version constraints as used in versions.tf: "~> 5.80", ">= 1.2", "3.0.1"..."""

    def parse(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    for part in constraint.split(","):
        match = re.fullmatch(r"\s*(~>|>=|<=|!=|>|<|=)?\s*([\d.]+)\s*", part)
        if match is None:
            raise ValueError(f"unsupported version constraint {constraint!r}")
        op, bound = match.groups()
        have, want = parse(version), parse(bound)
        if op == "~>":
            upper = (*want[:-2], want[-2] + 1) if len(want) > 1 else (want[0] + 1,)
            ok = have >= want and have[: len(upper)] < upper
        else:
            ok = {
                None: have == want,
                "=": have == want,
                "!=": have != want,
                ">=": have >= want,
                "<=": have <= want,
                ">": have > want,
                "<": have < want,
            }[op]
        if not ok:
            return False
    return True


def test_version_constraints() -> None:
    assert _satisfies("5.100.0", "~> 5.80")
    assert not _satisfies("5.79.1", "~> 5.80")
    assert not _satisfies("6.0.0", "~> 5.80")
    assert _satisfies("3.6.2", "~> 3.0")
    assert not _satisfies("3.1.0", "~> 3.0.2")
    assert _satisfies("1.11.4", ">= 1.6.0, < 2.0.0")


def test_schemas_are_for_the_pinned_provider_versions() -> None:
    (terraform,) = hcl2.loads((TERRAFORM_DIR / "versions.tf").read_text())["terraform"]
    (required,) = terraform["required_providers"]
    pinned = {
        _label(spec["source"]): _label(spec["version"])
        for name, spec in required.items()
        if not name.startswith("__")
    }
    assert set(pinned) == set(SCHEMAS["versions"]), "one schema file per required provider"
    for provider, constraint in pinned.items():
        have = SCHEMAS["versions"][provider]
        assert _satisfies(have, constraint), f"{provider} schema {have} is outside {constraint}"


@pytest.mark.parametrize("path", TF_FILES, ids=[p.name for p in TF_FILES])
def test_terraform_file_matches_the_provider_schemas(path: Path) -> None:
    problems = check_config(hcl2.loads(path.read_text()), path.name)
    assert not problems, "\n".join(problems)


def test_the_check_reports_what_terraform_validate_would() -> None:
    config = hcl2.loads("""
        resource "aws_sqs_queue" "jobs" {
          nmae                      = "jobs"
          message_retention_seconds = 60
          redrive_polcy {}
          dynamic "tag" {
            for_each = []
            content {}
          }
        }
        resource "aws_lb_target_group" "api" {
          health_check = { path = "/" }
          stickiness {
            type     = "lb_cookie"
            enabeld  = true
          }
        }
        resource "aws_lb_listener" "http" {
          port = 80
        }
        resource "aws_not_a_thing" "x" {}
        data "aws_iam_policy_document" "doc" {
          statement {
            efect = "Allow"
            principals {
              type        = "AWS"
              identifiers = ["*"]
            }
          }
        }
        # Terraform's built-in type, with its meta-arguments: no problems.
        resource "terraform_data" "built_in" {
          input            = 1
          triggers_replace = [2]
          lifecycle {
            create_before_destroy = true
          }
          provisioner "local-exec" {
            command = "true"
          }
        }
        provider "aws" {
          regoin = "us-east-1"
          default_tags {
            tags = {}
          }
        }
    """)
    assert check_config(config, "t.tf") == [
        "t.tf: resource aws_sqs_queue.jobs: unknown argument nmae",
        "t.tf: resource aws_sqs_queue.jobs: unknown block redrive_polcy",
        't.tf: resource aws_sqs_queue.jobs: unknown block dynamic "tag"',
        "t.tf: resource aws_lb_target_group.api: health_check is a block: "
        "write health_check { ... }, not =",
        "t.tf: resource aws_lb_target_group.api.stickiness: unknown argument enabeld",
        "t.tf: resource aws_lb_listener.http: missing required default_action",
        "t.tf: resource aws_lb_listener.http: missing required load_balancer_arn",
        "t.tf: resource aws_not_a_thing.x: unknown resource type aws_not_a_thing",
        "t.tf: data aws_iam_policy_document.doc.statement: unknown argument efect",
        "t.tf: provider aws: unknown argument regoin",
    ]

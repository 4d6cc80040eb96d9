"""`make aws-parity` as a test: the task definitions Terraform registers (applied against
moto), read back from moto's ECS and run as ECS runs them."""

from __future__ import annotations

import pytest

from tests.deployment.parity import harness

pytestmark = pytest.mark.deployment


def test_task_definitions_run_as_ecs_runs_them(base_image: str):
    """Apply ops/terraform, migrate, serve, pass both health checks, run a job, survive a
    password rotation, hand a job back on SIGTERM within stopTimeout
    (tests/deployment/parity/harness.py)."""
    figures = harness.run()
    # What ran is what Terraform registered: moto's first revision of each family (the
    # harness checks each ARN against Terraform's state, and each image digest against
    # moto's ECR).
    assert figures["terraform_apply_s"] > 0
    assert set(figures["task_definitions"]) == {"api", "worker", "migrate"}
    for kind, arn in figures["task_definitions"].items():
        assert arn == f"arn:aws:ecs:us-east-1:123456789012:task-definition/taskoverflow-{kind}:1"
    assert figures["image_digests"]["migrate"] == figures["image_digests"]["api"]
    assert figures["db_endpoint"].endswith(".rds.amazonaws.com:5432")

    assert figures["migration_exit_code"] == 0
    assert figures["first_job"] == figures["after_rotation"] == "SUCCESS"
    assert figures["connections_cut"] >= 2  # the API's and the worker's were cut
    assert figures["handed_back_job"] == "SUCCESS, attempts 2"
    assert figures["worker_stop_s"] < 60

"""`make aws-parity` as a test: the task definitions Terraform renders, run as ECS runs them."""

from __future__ import annotations

import pytest

from tests.deployment.parity import harness

pytestmark = pytest.mark.deployment


def test_task_definitions_run_as_ecs_runs_them(base_image: str):
    """Migrate, serve, pass both health checks, run a job, survive a password rotation,
    hand a job back on SIGTERM within stopTimeout (tests/deployment/parity/harness.py)."""
    figures = harness.run()
    assert figures["first_job"] == figures["after_rotation"] == "SUCCESS"
    assert figures["connections_cut"] >= 2  # the API's and the worker's were cut
    assert figures["handed_back_job"] == "SUCCESS, attempts 2"
    assert figures["worker_stop_s"] < 60

"""The reduced chaos runs CI can afford; `make chaos` runs the full ones (docs/RELIABILITY.md)."""

from __future__ import annotations

import json

import pytest

from tests.chaos.harness import run

pytestmark = pytest.mark.e2e


def assert_faults_hit_running_jobs(summary: dict) -> None:  # type: ignore[type-arg]
    """Faults that find only idle workers prove nothing: some must have landed mid-job."""
    assert summary["interrupted_by_sigkill"] > 0, summary["interrupted_per_fault"]
    assert summary["jobs_interrupted_by_faults"] <= summary["jobs_running_in_group_at_faults"]
    assert summary["max_kill_to_rerun_s"] <= 30


def test_redis_jobs_survive_kills_sigterms_duplicates_and_a_broker_outage(redis_url: str):
    """200 jobs; 3 SIGKILLs, 1 SIGTERM, Redis down 5 s, every message sent twice."""
    summary = run("redis", jobs=200, kills=3, sigterms=1, outage_s=5)
    print("\n" + json.dumps(summary))
    assert summary["lost_or_stuck"] == 0
    assert summary["identical_to_fault_free"] == summary["accepted"] == 200
    assert summary["refused_marked_failure"] == summary["refused_503"]
    assert summary["duplicate_messages"] == summary["accepted"]
    assert_faults_hit_running_jobs(summary)
    assert summary["ok"]


def test_sqs_jobs_survive_kills_sigterms_and_duplicates(sqs_endpoint: str):
    """150 jobs over SQS (moto); 2 SIGKILLs, 1 SIGTERM, every message sent twice."""
    summary = run("sqs", jobs=150, kills=2, sigterms=1, outage_s=0)
    print("\n" + json.dumps(summary))
    assert summary["lost_or_stuck"] == 0
    assert summary["identical_to_fault_free"] == summary["accepted"] == 150
    assert_faults_hit_running_jobs(summary)
    assert summary["ok"]

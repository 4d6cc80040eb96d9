"""The reduced chaos runs CI can afford; `make chaos` runs the full ones (docs/RELIABILITY.md)."""

from __future__ import annotations

import json

import pytest

from tests.chaos.harness import run

pytestmark = pytest.mark.e2e


def test_redis_jobs_survive_kills_sigterms_duplicates_and_a_broker_outage(redis_url: str):
    """200 jobs; 3 SIGKILLs, 1 SIGTERM, Redis down 5 s, every message sent twice."""
    summary = run("redis", jobs=200, kills=3, sigterms=1, outage_s=5, seconds=30)
    print("\n" + json.dumps(summary))
    assert summary["lost_or_stuck"] == 0
    assert summary["identical_to_fault_free"] == summary["accepted"] > 0
    assert summary["refused_marked_failure"] == summary["refused_503"]
    assert summary["duplicate_messages"] == summary["accepted"]
    assert summary["max_kill_to_rerun_s"] <= 30
    assert summary["ok"]


def test_sqs_jobs_survive_kills_sigterms_and_duplicates(sqs_endpoint: str):
    """80 jobs over SQS (moto); 2 SIGKILLs, 1 SIGTERM, every message sent twice."""
    summary = run("sqs", jobs=80, kills=2, sigterms=1, outage_s=0, seconds=20)
    print("\n" + json.dumps(summary))
    assert summary["lost_or_stuck"] == 0
    assert summary["identical_to_fault_free"] == summary["accepted"] == 80
    assert summary["max_kill_to_rerun_s"] <= 30
    assert summary["ok"]

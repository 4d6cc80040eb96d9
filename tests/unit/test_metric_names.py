"""The workers' CloudWatch EMF lines are valid EMF, and ops/terraform reads exactly the metric
names, dimensions and namespace they carry; the Prometheus series are named as documented."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from models import AttemptOutcome, JobKind, JobStatus
from models.lifecycle import Claimed
from models.settings import TelemetrySettings
from tests.deployment import task_definitions
from tests.deployment.test_terraform import FACTS
from tests.services import ROOT
from workers import metrics as job_metrics
from workers.metrics_server import pool_registry

#: CloudWatch's units (PutMetricData's StandardUnit) that EMF accepts.
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Count", "Percent", "None"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """ops/terraform evaluated by tfparse (tests/deployment/task_definitions.py)."""
    return task_definitions.render(FACTS)


@pytest.fixture
def emf(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """EMF on, under a test namespace, for the test; the lines it wrote, parsed."""
    job_metrics.configure(
        TelemetrySettings.from_env({"METRICS_EMF": "true", "METRICS_NAMESPACE": "TaskOverflow/t"})
    )
    capsys.readouterr()

    def lines() -> list[dict[str, Any]]:
        out = capsys.readouterr().out.splitlines()
        return [json.loads(line) for line in out]

    yield lines
    job_metrics.configure(TelemetrySettings())


def claimed(attempts: int, waited_s: float = 0.25) -> Claimed:
    started = datetime(2030, 1, 1, 12, 0, 0)
    return Claimed("ical", attempts, False, started - timedelta(seconds=waited_s), started)


def assert_valid_emf(event: dict[str, Any], namespace: str) -> None:
    """The EMF specification's rules for one log event."""
    aws = event["_aws"]
    assert isinstance(aws["Timestamp"], int)
    assert aws["Timestamp"] > 1_600_000_000_000
    assert aws["CloudWatchMetrics"]
    for directive in aws["CloudWatchMetrics"]:
        assert directive["Namespace"] == namespace
        assert directive["Dimensions"]
        assert directive["Metrics"]
        for dimension_set in directive["Dimensions"]:
            assert 1 <= len(dimension_set) <= 30
            for name in dimension_set:  # a dimension is a top-level string member
                assert isinstance(event[name], str)
                assert event[name]
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert metric["Unit"] in UNITS
            assert isinstance(event[metric["Name"]], int | float)


def test_an_attempt_writes_one_valid_emf_line_with_its_figures(emf):  # type: ignore[no-untyped-def]
    """First attempt: attempts, run time and queue wait; the job settled: JobsFinished too."""
    job_metrics.attempt_ended(
        claimed(1), AttemptOutcome.SUCCESS, 0.0421, finished=JobStatus.SUCCESS
    )
    job_metrics.attempt_ended(claimed(2), AttemptOutcome.RETRY, 1.5)
    first, retry = emf()
    for event in (first, retry):
        assert_valid_emf(event, "TaskOverflow/t")
    assert first[job_metrics.EMF_QUEUE_WAIT_MS] == 250.0
    assert first[job_metrics.EMF_RUN_TIME_MS] == 42.1
    assert (first[job_metrics.EMF_ATTEMPTS], first[job_metrics.EMF_JOBS_FINISHED]) == (1, 1)
    assert (first["Kind"], first["Outcome"], first["Status"]) == ("ical", "success", "SUCCESS")
    # Each metric under its own dimension set only (each pair is a billed CloudWatch metric).
    published = {
        metric["Name"]: directive["Dimensions"]
        for directive in first["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert published == {name: [dims] for name, dims in job_metrics.EMF_DIMENSIONS.items()}
    # A later attempt waited in no queue of its own, and settled nothing.
    assert job_metrics.EMF_QUEUE_WAIT_MS not in retry
    assert job_metrics.EMF_JOBS_FINISHED not in retry
    assert "Status" not in retry
    assert (retry["Outcome"], retry[job_metrics.EMF_RUN_TIME_MS]) == ("retry", 1500.0)


def test_an_exhausted_job_writes_its_failure(emf):  # type: ignore[no-untyped-def]
    job_metrics.job_exhausted("ical", 3)
    (event,) = emf()
    assert_valid_emf(event, "TaskOverflow/t")
    assert (event["Status"], event[job_metrics.EMF_JOBS_FINISHED]) == ("FAILURE", 1)


def test_no_emf_line_unless_configured(capsys: pytest.CaptureFixture[str]):
    job_metrics.configure(TelemetrySettings())
    job_metrics.attempt_ended(claimed(1), AttemptOutcome.SUCCESS, 0.01, finished=JobStatus.SUCCESS)
    assert capsys.readouterr().out == ""


def test_prometheus_series_count_attempts_and_settled_jobs_apart():
    """In one process (no multiprocess directory) the default registry has the series: an
    exhausted job's last attempt stays a retry, the job one FAILURE."""

    def read() -> dict[str, float]:
        text = generate_latest(pool_registry()).decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("taskoverflow_")
        }

    before = read()
    job_metrics.job_claimed(claimed(1, waited_s=0.02))
    job_metrics.attempt_ended(claimed(1), AttemptOutcome.RETRY, 0.003)
    job_metrics.job_claimed(claimed(2))
    job_metrics.attempt_ended(claimed(2), AttemptOutcome.RETRY, 0.004)
    job_metrics.job_exhausted("ical", 2)
    after = read()

    def delta(series: str) -> float:
        return after.get(series, 0) - before.get(series, 0)

    assert delta('taskoverflow_job_attempts_total{kind="ical",outcome="retry"}') == 2
    assert delta('taskoverflow_job_attempts_total{kind="ical",outcome="failure"}') == 0
    assert delta('taskoverflow_jobs_finished_total{kind="ical",status="FAILURE"}') == 1
    assert delta('taskoverflow_job_queue_wait_seconds_count{kind="ical"}') == 1
    assert delta('taskoverflow_job_queue_wait_seconds_bucket{kind="ical",le="0.025"}') == 1
    assert delta('taskoverflow_job_queue_wait_seconds_bucket{kind="ical",le="0.01"}') == 0
    assert delta('taskoverflow_job_run_seconds_count{kind="ical",outcome="retry"}') == 2
    assert delta('taskoverflow_job_attempts_used_sum{kind="ical"}') == 2


def test_terraform_alarms_read_what_the_workers_write(rendered: dict[str, Any]):
    """Every alarm on our namespace names an EMF metric with exactly its dimensions, and
    values the code emits (job kinds, final statuses)."""
    local = task_definitions.local_values(rendered)
    assert local["job_kinds"] == [kind.value for kind in JobKind]
    ours = [
        alarm
        for alarm in rendered["aws_cloudwatch_metric_alarm"]
        if alarm["namespace"] == local["metrics_namespace"]
    ]
    seen = {alarm["metric_name"] for alarm in ours}
    assert seen == {job_metrics.EMF_JOBS_FINISHED, job_metrics.EMF_QUEUE_WAIT_MS}
    allowed = {
        job_metrics.DIM_KIND: {kind.value for kind in JobKind},
        job_metrics.DIM_STATUS: {s.value for s in JobStatus},
        job_metrics.DIM_OUTCOME: {o.value for o in AttemptOutcome},
    }
    for alarm in ours:
        dimensions = alarm["dimensions"]
        assert list(dimensions) == job_metrics.EMF_DIMENSIONS[alarm["metric_name"]]
        for name, value in dimensions.items():
            assert value in allowed[name], (alarm["alarm_name"], name, value)
    failing = next(a for a in ours if a["metric_name"] == job_metrics.EMF_JOBS_FINISHED)
    assert failing["dimensions"]["Status"] == JobStatus.FAILURE.value
    wait = next(a for a in ours if a["metric_name"] == job_metrics.EMF_QUEUE_WAIT_MS)
    assert wait["extended_statistic"] == "p95"


def test_the_worker_task_writes_emf_under_the_alarms_namespace(rendered: dict[str, Any]):
    containers = task_definitions.container_definitions(rendered)
    env = {e["name"]: e["value"] for e in containers["worker"]["environment"]}
    telemetry = TelemetrySettings.from_env(env)
    assert telemetry.metrics_emf is True
    assert (
        telemetry.metrics_namespace == task_definitions.local_values(rendered)["metrics_namespace"]
    )


#: A dashboard metric of ours: [local.metrics_namespace, "Name", "Dim", value, ..., { ... }].
_DASHBOARD_METRIC = re.compile(r"\[local\.metrics_namespace,\s*([^{\]]*?),?\s*\{")


def test_dashboard_widgets_name_emf_metrics_with_their_dimensions():
    """The dashboard body (jsonencode of for expressions: read as written) names only EMF
    metrics, each with exactly its dimension names."""
    text = Path(ROOT, "ops", "terraform", "cloudwatch.tf").read_text()
    body = text[text.index('resource "aws_cloudwatch_dashboard"') :]
    found = _DASHBOARD_METRIC.findall(body)
    assert len(found) >= 4
    names = set()
    for entry in found:
        parts = [p.strip() for p in entry.split(",")]
        name, pairs = json.loads(parts[0]), parts[1:]
        dimension_names = [json.loads(p) for p in pairs[0::2]]
        assert dimension_names == job_metrics.EMF_DIMENSIONS[name], entry
        names.add(name)
    assert names == set(job_metrics.EMF_DIMENSIONS)

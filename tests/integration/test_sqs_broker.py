"""The SQS broker against a real SQS-compatible server (moto, its own process)."""

from __future__ import annotations

import base64
import json
import uuid

import boto3
import dramatiq
import pytest
from litestar.testing import TestClient
from sqlalchemy import Connection, Engine

from api.app import create_app
from models.queue import build_broker
from models.results import StoredResult
from models.sqs import JobSQSBroker, QueueMissing, queue_names
from tests.conftest import make_sqs_settings
from tests.integration.jobs import insert_job, insert_todos
from tests.waiting import wait_for, wait_for_job
from tests.workers import consuming_worker
from workers.broker import build_worker_broker
from workers.middleware import current_resources
from workers.runner import Progress, run_job


def sqs(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)


def queue_attributes(endpoint: str, name: str) -> dict[str, str]:
    client = sqs(endpoint)
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def drain(endpoint: str, name: str, wait_s: float = 10) -> list[str]:
    """The bodies of the first messages on queue ``name`` (then deleted); a failure if none
    arrives within ``wait_s`` seconds."""
    client = sqs(endpoint)
    url = client.get_queue_url(QueueName=name)["QueueUrl"]

    def receive() -> list[str]:
        bodies = []
        for message in client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            bodies.append(message["Body"])
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    return wait_for(receive, timeout=wait_s, what=f"a message on {name}")


def test_missing_queues_are_refused_unless_creation_is_allowed(
    database_url: str, sqs_endpoint: str
):
    """Production expects Terraform's queues: a missing one is a clear start-up error."""
    settings = make_sqs_settings(database_url, sqs_endpoint, SQS_CREATE_QUEUES="false")
    broker = build_broker(settings.broker)
    assert isinstance(broker, JobSQSBroker)
    main, _ = queue_names(settings.broker)
    with pytest.raises(QueueMissing, match=f"SQS queue '{main}' does not exist"):
        broker.resolve_queues()


def test_created_queues_have_a_redrive_policy_to_the_dlq(database_url: str, sqs_endpoint: str):
    """The development switch creates <ns>_<queue> and its _dlq, wired by RedrivePolicy."""
    settings = make_sqs_settings(database_url, sqs_endpoint, SQS_MAX_RECEIVE_COUNT="4")
    broker = build_broker(settings.broker)
    assert isinstance(broker, JobSQSBroker)
    broker.resolve_queues()
    main, dlq = queue_names(settings.broker)
    attributes = queue_attributes(sqs_endpoint, main)
    policy = json.loads(attributes["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == queue_attributes(sqs_endpoint, dlq)["QueueArn"]
    assert int(policy["maxReceiveCount"]) == 4
    assert attributes["VisibilityTimeout"] == str(settings.broker.sqs_visibility_timeout_s)


def test_consumers_long_poll_and_prefetch_no_more_than_the_threads(
    database_url: str, sqs_endpoint: str
):
    """Our wait time replaces dramatiq_worker_timeout; prefetch is capped at the threads."""
    settings = make_sqs_settings(database_url, sqs_endpoint, SQS_WAIT_TIME_S="7")
    broker = build_worker_broker(settings, threads=3, run_reconciler=False)
    consumer = broker.consume(settings.broker.queue_name, prefetch=6, timeout=100)
    assert consumer.wait_time_seconds == 7  # type: ignore[attr-defined]
    assert consumer.prefetch == 3  # type: ignore[attr-defined]
    assert consumer.visibility_timeout == 90  # type: ignore[attr-defined]  # 60 s limit + 30


def test_api_to_sqs_to_worker_reaches_success(database_url: str, sqs_endpoint: str, engine: Engine):
    """POST /todos/ical over SQS: the worker renders it and the result is served."""
    settings = make_sqs_settings(database_url, sqs_endpoint)
    insert_todos(engine, 3)
    with TestClient(create_app(settings)) as client:
        submitted = client.post("/api/v1/todos/ical")
        assert submitted.status_code == 202
        job_id = uuid.UUID(submitted.json()["task_id"])
        broker = build_worker_broker(settings, threads=2, run_reconciler=False)
        with consuming_worker(broker, settings, threads=2):
            assert wait_for_job(engine, job_id, timeout=30).status == "SUCCESS"
        result = client.get(f"/api/v1/todos/ical/{job_id}/result")
    assert result.status_code == 200
    assert result.text.count("BEGIN:VEVENT") == 3


def test_always_failing_job_ends_failure_and_its_message_in_the_dlq(
    database_url: str, sqs_endpoint: str, engine: Engine
):
    """After the retries the job is FAILURE with its reason, and the message is in _dlq."""
    settings = make_sqs_settings(database_url, sqs_endpoint)
    job_id = insert_job(engine)

    def poison(job: str) -> None:
        def work(conn: Connection, progress: Progress) -> StoredResult:
            raise RuntimeError("poison job")

        resources = current_resources()
        run_job(resources.engine, uuid.UUID(job), work, keep=resources.settings.jobs.result_ttl)

    broker = build_worker_broker(settings, threads=2, run_reconciler=False)
    dramatiq.actor(poison, broker=broker, queue_name=settings.broker.queue_name)
    with consuming_worker(broker, settings, threads=2):
        broker.get_actor("poison").send(str(job_id))
        row = wait_for_job(engine, job_id, timeout=30)
    assert row.status == "FAILURE"
    assert row.error == "failed after 3 attempts: RuntimeError: poison job"
    _, dlq = queue_names(settings.broker)
    (dead,) = drain(sqs_endpoint, dlq)
    assert json.loads(base64.b64decode(dead))["args"] == [str(job_id)]


def test_undecodable_message_is_redriven_to_the_dlq(database_url: str, sqs_endpoint: str):
    """A body the worker cannot decode is not lost and not looped: SQS moves it to _dlq."""
    settings = make_sqs_settings(
        database_url,
        sqs_endpoint,
        JOB_TIME_LIMIT_MS="1000",
        SQS_VISIBILITY_TIMEOUT_S="2",
        SQS_MAX_RECEIVE_COUNT="2",
    )
    broker = build_worker_broker(settings, threads=1, run_reconciler=False)
    assert isinstance(broker, JobSQSBroker)
    broker.resolve_queues()
    main, dlq = queue_names(settings.broker)
    client = sqs(sqs_endpoint)
    client.send_message(
        QueueUrl=client.get_queue_url(QueueName=main)["QueueUrl"],
        MessageBody="this is not a dramatiq message",
    )
    with consuming_worker(broker, settings, threads=1):
        assert drain(sqs_endpoint, dlq, wait_s=20) == ["this is not a dramatiq message"]

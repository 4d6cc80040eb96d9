"""The job sender the API process holds for its lifetime (api.app hands it to the job
routes), and its fault-injecting stand-in for reliability tests."""

from __future__ import annotations

import os
import uuid

import dramatiq

from models.queue import send_job


class JobSender:
    """Sends job messages by actor name. Safe to call from the API's worker threads."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        # Every broker we build is safe to share between threads: redis-py and Dramatiq's
        # in-memory broker are, and the SQS broker serialises its own sends (models/sqs.py).
        self.broker = broker
        self.queue_name = queue_name

    def send(self, kind: str, job_id: uuid.UUID, traceparent: str | None = None) -> None:
        """Send job ``job_id`` to the actor of its ``kind`` (a submission or a retry), in the
        trace ``traceparent`` names."""
        send_job(self.broker, self.queue_name, kind, job_id, traceparent)


class CrashAfterCommitSender(JobSender):
    """TASKOVERFLOW_FAULTS=crash-after-commit (reliability tests; refused in production).

    The handler commits a job's row before it sends the message, so dying here is dying
    exactly where a crash strands a job: committed, never sent. The reconciler must send it
    (tests/chaos/test_outages.py). Exit status 70 tells the test it was this crash.
    """

    def send(self, kind: str, job_id: uuid.UUID, traceparent: str | None = None) -> None:
        os._exit(70)

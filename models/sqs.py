"""Amazon SQS as the job broker: dramatiq-sqs with production-safe settings.

dramatiq-sqs 0.4.4 (pinned exactly) defaults to a 12-hour visibility timeout, no dead-letter
queue, queues created on first use, unbounded network waits, and the worker's idle poll
interval as its long-poll wait. ``JobSQSBroker`` fixes each of those from our settings; see
the README's "Running on SQS".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq
from botocore.config import Config
from dramatiq_sqs import SQSBroker

from models.settings import BrokerSettings

#: Messages (and dead letters) are kept for the SQS maximum, 14 days.
RETENTION_S = 14 * 86_400


class QueueMissing(RuntimeError):
    """A queue the broker needs does not exist and we may not create it."""


def queue_names(settings: BrokerSettings) -> tuple[str, str]:
    """The SQS names of the job queue and its DLQ, as dramatiq-sqs derives them."""
    main = f"{settings.namespace}_{settings.queue_name}"
    return main, f"{main}_dlq"


def client_config(settings: BrokerSettings) -> Config:
    """Bounded waits: a send fails within seconds, a long poll is never cut short."""
    return Config(
        region_name=settings.sqs_region,
        connect_timeout=settings.send_timeout_s,
        read_timeout=settings.sqs_wait_time_s + settings.send_timeout_s,
        retries={"mode": "standard", "max_attempts": 3},
    )


def create_queue_pair(
    sqs: Any, name: str, *, max_receive_count: int, visibility_timeout_s: int
) -> tuple[str, str]:
    """Create ``name`` and ``name_dlq`` (idempotent), the first redriving to the second.

    The redrive policy is what catches messages the worker cannot even decode, and messages
    whose workers keep dying: after ``max_receive_count`` receives SQS moves them to the DLQ.
    Returns both queue URLs.
    """
    dlq = sqs.create_queue(
        QueueName=f"{name}_dlq",
        Attributes={"MessageRetentionPeriod": str(RETENTION_S), "SqsManagedSseEnabled": "true"},
    )
    dlq_arn = dlq.attributes["QueueArn"]
    main = sqs.create_queue(
        QueueName=name,
        Attributes={
            "MessageRetentionPeriod": str(RETENTION_S),
            "VisibilityTimeout": str(visibility_timeout_s),
            "SqsManagedSseEnabled": "true",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )
    return main.url, dlq.url


class JobSQSBroker(SQSBroker):
    """dramatiq-sqs with our queue policy, long-poll wait, prefetch cap and a send lock."""

    def __init__(
        self,
        settings: BrokerSettings,
        middleware: Sequence[dramatiq.Middleware] = (),
        *,
        consumer_prefetch: int | None = None,
    ) -> None:
        if settings.sqs_visibility_timeout_s is None:
            # Without it dramatiq-sqs falls back to 12 hours; Settings always derives one.
            raise ValueError("build the SQS broker from Settings, which sets the visibility")
        super().__init__(
            namespace=settings.namespace,
            middleware=list(middleware),
            retention=RETENTION_S,
            # Failed messages go to <queue>_dlq instead of being deleted.
            dead_letter=True,
            dead_letter_retention=RETENTION_S,
            visibility_timeout=settings.sqs_visibility_timeout_s,
            endpoint_url=settings.sqs_endpoint_url,
            config=client_config(settings),
        )
        self.settings = settings
        self.consumer_prefetch = consumer_prefetch
        # boto3 resources are not thread-safe; sends come from API and worker threads.
        self._send_lock = threading.Lock()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 0) -> dramatiq.Consumer:
        # dramatiq passes its idle poll interval (dramatiq_worker_timeout, tuned for Redis) as
        # the timeout, which dramatiq-sqs uses as the long-poll wait: 100 ms would mean short
        # polling. Long polling answers as soon as a message arrives, so a longer wait costs
        # no latency and saves requests.
        if self.consumer_prefetch:
            # A prefetched message's visibility clock is already running: never hold more
            # than the threads can start at once.
            prefetch = min(prefetch, self.consumer_prefetch)
        return super().consume(queue_name, prefetch, self.settings.sqs_wait_time_s * 1000)

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        with self._send_lock:
            return super().enqueue(message, delay=delay)

    def resolve_queues(self) -> None:
        """Look up every declared queue (and DLQ) now: a worker fails at start, not later."""
        for queue_name in self.get_declared_queues():
            self._ensure_queue(queue_name)

    def _get_or_create_sqs_queue(
        self, sqs_queue_name: str, *, message_retention_period: int, tags: Any = None
    ) -> Any:
        # Overrides dramatiq-sqs 0.4.4's lookup, which silently creates any missing queue
        # (without a redrive policy): in production Terraform owns the queues.
        client = self.sqs.meta.client
        try:
            return self.sqs.get_queue_by_name(QueueName=sqs_queue_name)
        except client.exceptions.QueueDoesNotExist:
            if not self.settings.sqs_create_queues:
                where = self.settings.sqs_endpoint_url or f"region {self.settings.sqs_region}"
                raise QueueMissing(
                    f"SQS queue {sqs_queue_name!r} does not exist ({where}); create it with "
                    "the Terraform in ops/ or `make sqs-queues`, or set SQS_CREATE_QUEUES=true "
                    "in development"
                ) from None
        main = sqs_queue_name.removesuffix("_dlq")
        create_queue_pair(
            self.sqs,
            main,
            max_receive_count=self.settings.sqs_max_receive_count,
            visibility_timeout_s=self.visibility_timeout,
        )
        return self.sqs.get_queue_by_name(QueueName=sqs_queue_name)

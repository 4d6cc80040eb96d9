"""The job queue contract shared by the sender (API) and the consumers (workers).

The API enqueues a calendar job by *name*: it builds a Dramatiq message addressed to the
actor name and queue below, carrying only the job id. It never imports actor code, so the API
image needs no calendar renderer. The workers register their actor under the same name.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from models.settings import BrokerSettings

#: The actor that renders a calendar job; ``workers.actors.calendar`` registers it.
CALENDAR_ACTOR = "render_calendar"


def build_broker(
    settings: BrokerSettings,
    middleware: Sequence[dramatiq.Middleware] = (),
    *,
    consumer_prefetch: int | None = None,
) -> dramatiq.Broker:
    """The broker ``BROKER_URL`` names, with exactly the middleware given (no defaults).

    Connecting is lazy: nothing touches the network until the first send or receive.
    ``consumer_prefetch`` caps how many messages a consumer holds (SQS; workers only).
    """
    broker: dramatiq.Broker
    if settings.is_in_memory:
        # One process only (the zero-setup run): the API and the actors share this broker.
        broker = StubBroker(middleware=list(middleware))
    elif settings.is_sqs:
        # Imported only here: boto3 and botocore cost every process ~11 MB of memory
        # (the worker: 82 MB resident with them, 71 without; docs/BENCHMARKS.md P4).
        from models.sqs import JobSQSBroker

        broker = JobSQSBroker(settings, middleware, consumer_prefetch=consumer_prefetch)
    else:
        broker = RedisBroker(
            url=settings.url,
            namespace=settings.namespace,
            middleware=list(middleware),
            heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
            maintenance_chance=settings.redis_maintenance_chance,
        )
        # redis-py waits forever by default; a send must fail fast so the API can answer 503.
        pool_kwargs = broker.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        pool_kwargs.setdefault("socket_connect_timeout", settings.send_timeout_s)
        pool_kwargs.setdefault("socket_timeout", settings.send_timeout_s)
    broker.declare_queue(settings.queue_name)
    return broker


def calendar_message(queue_name: str, job_id: uuid.UUID) -> dramatiq.Message:
    """The message that asks a worker to render calendar job ``job_id``."""
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=CALENDAR_ACTOR,
        args=(str(job_id),),
        kwargs={},
        options={},
    )

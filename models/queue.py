"""The job queue contract shared by the senders (API, reconciler) and the workers.

A job is sent by *name*: a Dramatiq message addressed to the actor of the job's kind, on the
deployment's queue, carrying only the job id. Senders never import actor code, so the API
image needs no calendar renderer; the workers register an actor under each name below.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from models.job import JobKind
from models.settings import BrokerSettings

#: The actor that runs each kind of job (``workers.actors`` registers them). The names are
#: part of the contract: messages already on a queue carry them across deployments.
ACTOR_BY_KIND: dict[str, str] = {JobKind.ICAL: "render_calendar"}


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
        # Imported only here: boto3 and botocore cost every process memory it does not need
        # on Redis (docs/BENCHMARKS.md, P4).
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


#: The message option that carries the job's W3C trace context (``traceparent``) to the
#: worker. Options travel inside the encoded message on every broker (Redis, SQS, memory).
TRACEPARENT_OPTION = "traceparent"


def job_message(
    queue_name: str, kind: str, job_id: uuid.UUID, traceparent: str | None = None
) -> dramatiq.Message:
    """The message that asks a worker to run job ``job_id`` of ``kind``, in the trace
    ``traceparent`` names (if any)."""
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=ACTOR_BY_KIND[kind],
        args=(str(job_id),),
        kwargs={},
        options={} if traceparent is None else {TRACEPARENT_OPTION: traceparent},
    )


def send_job(
    broker: dramatiq.Broker,
    queue_name: str,
    kind: str,
    job_id: uuid.UUID,
    traceparent: str | None = None,
) -> None:
    """Send job ``job_id`` to the actor of its kind: the one way every sender sends a job."""
    broker.enqueue(job_message(queue_name, kind, job_id, traceparent))

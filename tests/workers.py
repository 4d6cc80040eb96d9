"""Running real Dramatiq workers inside the test process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import dramatiq
from dramatiq.brokers.stub import StubBroker

from models.settings import Settings
from workers.actors import register_actors
from workers.broker import build_worker_broker, worker_middleware

B = TypeVar("B", bound=dramatiq.Broker)


@contextmanager
def consuming_worker(broker: B, settings: Settings, threads: int) -> Iterator[B]:
    """Register our actors on ``broker`` and run a real Worker on it for the block."""
    register_actors(broker, settings.broker.queue_name)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()
        broker.close()


def redis_worker(settings: Settings, *, threads: int = 2):  # type: ignore[no-untyped-def]
    """A real Worker consuming the real Redis broker, as ``dramatiq workers.main`` would."""
    broker = build_worker_broker(settings, threads=threads, run_reconciler=False)
    return consuming_worker(broker, settings, threads)


def stub_worker(settings: Settings, *, threads: int = 2):  # type: ignore[no-untyped-def]
    """Our full middleware stack on Dramatiq's in-memory broker, with a real Worker."""
    middleware = worker_middleware(settings, threads=threads, run_reconciler=False)
    broker = StubBroker(middleware=middleware)
    dramatiq.set_broker(broker)
    return consuming_worker(broker, settings, threads)

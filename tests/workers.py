"""Running real Dramatiq workers inside the test process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.stub import StubBroker

from models.settings import Settings
from workers.actors import register_actors
from workers.broker import build_worker_broker, worker_middleware


@contextmanager
def redis_worker(settings: Settings, *, threads: int = 2) -> Iterator[dramatiq.Broker]:
    """A real Worker consuming the real Redis broker, as ``dramatiq workers.main`` would."""
    broker = build_worker_broker(settings, threads=threads, run_reconciler=False)
    register_actors(broker, settings.broker.queue_name)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()
        broker.close()


@contextmanager
def stub_worker(settings: Settings, *, threads: int = 2) -> Iterator[StubBroker]:
    """Our full middleware stack on Dramatiq's in-memory broker, with a real Worker."""
    broker = StubBroker(
        middleware=worker_middleware(settings, threads=threads, run_reconciler=False)
    )
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    register_actors(broker, settings.broker.queue_name)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()
        broker.close()

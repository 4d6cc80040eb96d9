"""How many job messages wait in the broker: the backlog beside the database's PENDING rows.

The database says which jobs are unfinished; only the broker knows how many messages are
still to be delivered (a PENDING job whose message was lost has none, a redelivered one may
have two). ``BacklogReader.broker_depth()`` reads that from whichever broker the process
sends through, the same way on every call site (the console's stats route, metrics gauges):

- Redis (Dramatiq's RedisBroker, keys under BROKER_NAMESPACE): ``<ns>:<queue>`` is the list
  of ready message ids, ``<ns>:<queue>.msgs`` the hash of every message not yet acked
  (ready or held by a worker), ``<ns>:<queue>.DQ.msgs`` the delayed ones (retries waiting
  out their backoff, whether still listed or already held by a worker until their eta) and
  ``<ns>:<queue>.XQ`` the dead-lettered ones.
- SQS: the queue's ApproximateNumberOfMessages / ...NotVisible / ...Delayed attributes, and
  the DLQ's ApproximateNumberOfMessages.
- The in-memory broker (single process): its queues' sizes.

Broker clients block, so a reading runs in the thread pool, bounded by a timeout. Readings
are cached for a couple of seconds and concurrent callers share one reading: a console
polling every few seconds from many tabs costs the broker one round trip per interval. An
unreachable broker is a reading of None with the reason, never an exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from api.state import JobSender

log = structlog.get_logger("api")

#: How long a reading is reused: a console refreshes every few seconds.
CACHE_S = 2.0
#: A reading that takes longer is given up (the broker's own timeouts are longer: SQS retries).
READ_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class BrokerDepth:
    """Messages of the job queue by where they are. ``in_flight``: handed to a worker and
    not yet acknowledged; ``delayed``: waiting out a retry backoff; ``dead_lettered``: given
    up by the broker (None where the broker keeps no such queue)."""

    broker: str  #: "redis", "sqs" or "memory"
    queue: str  #: the broker's name of the queue
    ready: int
    in_flight: int
    delayed: int
    dead_lettered: int | None


@dataclass(frozen=True)
class BacklogReading:
    """One reading: the depth, or None with why it could not be read, and when it was taken
    (monotonic seconds, for the cache)."""

    depth: BrokerDepth | None
    error: str | None
    taken_at: float


def _redis_depth(broker: RedisBroker, queue_name: str) -> BrokerDepth:
    key = f"{broker.namespace}:{queue_name}"
    delayed_key = f"{broker.namespace}:{dq_name(queue_name)}"
    # One round trip; none of these commands touches a message.
    pipe = broker.client.pipeline(transaction=False)
    pipe.llen(key)
    pipe.hlen(f"{key}.msgs")
    pipe.hlen(f"{delayed_key}.msgs")
    pipe.zcard(f"{key}.XQ")
    ready, unacked, delayed, dead = (int(value) for value in pipe.execute())
    return BrokerDepth(
        broker="redis",
        queue=key,
        ready=ready,
        # A message leaves the list when fetched and the hash when acked: between the two,
        # a worker holds it. (Two reads, not atomic: never below zero.)
        in_flight=max(unacked - ready, 0),
        delayed=delayed,
        dead_lettered=dead,
    )


def _memory_depth(broker: StubBroker, queue_name: str) -> BrokerDepth:
    ready_queue = broker.queues[queue_name]
    delay_queue = broker.queues[dq_name(queue_name)]
    ready = ready_queue.qsize()
    return BrokerDepth(
        broker="memory",
        queue=queue_name,
        ready=ready,
        # queue.Queue counts a message unfinished until the consumer's ack (task_done).
        in_flight=max(ready_queue.unfinished_tasks - ready, 0),
        delayed=delay_queue.unfinished_tasks,
        dead_lettered=len(broker.dead_letters_by_queue.get(queue_name, ())),
    )


_SQS_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class _SQSDepth:
    """Reads an SQS queue pair's attributes with the broker's low-level client (thread-safe,
    unlike the boto3 resource the broker sends with), the queue URLs looked up once."""

    def __init__(self, broker: Any, queue_name: str) -> None:
        self._client = broker.sqs.meta.client
        # Named as dramatiq-sqs names them: <namespace>_<queue> and its _dlq.
        main = f"{broker.namespace}_{queue_name}" if broker.namespace else queue_name
        self._names = (main, f"{main}_dlq")
        self._urls: tuple[str, str] | None = None

    def __call__(self) -> BrokerDepth:
        if self._urls is None:
            main, dlq = (self._client.get_queue_url(QueueName=n)["QueueUrl"] for n in self._names)
            self._urls = (main, dlq)
        main_url, dlq_url = self._urls
        main = self._client.get_queue_attributes(QueueUrl=main_url, AttributeNames=_SQS_ATTRIBUTES)
        dead = self._client.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        attributes = main["Attributes"]
        return BrokerDepth(
            broker="sqs",
            queue=self._names[0],
            ready=int(attributes["ApproximateNumberOfMessages"]),
            in_flight=int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            delayed=int(attributes["ApproximateNumberOfMessagesDelayed"]),
            dead_lettered=int(dead["Attributes"]["ApproximateNumberOfMessages"]),
        )


def _depth_reader(broker: dramatiq.Broker, queue_name: str) -> Callable[[], BrokerDepth]:
    """A blocking function that reads ``queue_name``'s depth on ``broker``."""
    if isinstance(broker, RedisBroker):
        return lambda: _redis_depth(broker, queue_name)
    if isinstance(broker, StubBroker):
        return lambda: _memory_depth(broker, queue_name)
    # Imported here: boto3 and botocore only in processes that already use SQS.
    from models.sqs import JobSQSBroker

    if isinstance(broker, JobSQSBroker):
        return _SQSDepth(broker, queue_name)
    raise TypeError(f"no backlog reading for a {type(broker).__name__}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class BacklogReader:
    """The job queue's depth in the broker, cached for ``cache_s`` seconds.

    Build one per process from the broker the process sends through and share it (the
    cache and the single in-flight reading are per instance): in the API,
    ``backlog_reader(sender)`` gives the app's sender's one.
    """

    def __init__(
        self,
        broker: dramatiq.Broker,
        queue_name: str,
        *,
        cache_s: float = CACHE_S,
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._read = _depth_reader(broker, queue_name)
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._last: BacklogReading | None = None
        self._pending: asyncio.Future[BacklogReading] | None = None
        #: The blocking read on its thread, which outlives a reading that gave up on it.
        self._running: concurrent.futures.Future[BrokerDepth] | None = None

    async def broker_depth(self) -> BrokerDepth | None:
        """The depth, or None when the broker could not be read (``reading()`` says why)."""
        return (await self.reading()).depth

    async def reading(self) -> BacklogReading:
        """The latest reading, taken now unless one younger than ``cache_s`` exists."""
        last = self._last
        if last is not None and time.monotonic() - last.taken_at < self._cache_s:
            return last
        if self._pending is None:
            # One reading at a time: concurrent callers await the same one.
            self._pending = asyncio.ensure_future(self._take())
            self._pending.add_done_callback(self._done)
        return await asyncio.shield(self._pending)

    def _done(self, future: asyncio.Future[BacklogReading]) -> None:
        self._pending = None
        if not future.cancelled() and future.exception() is None:
            self._last = future.result()

    async def _take(self) -> BacklogReading:
        running = self._running
        if running is not None and not running.done():
            # A read that timed out is still blocked in its client (an SQS call can retry for
            # over a minute): never a second thread beside it.
            return self._failed("the last broker reading has not returned yet", None)
        running = self._running = concurrent.futures.Future()
        # Broker clients block (redis-py, boto3): read on a thread, not the loop; our own
        # daemon thread, not the loop's default executor, whose threads send the jobs and
        # must never all be stuck on a broker that hangs (nor hold up the process's exit).
        threading.Thread(
            target=self._read_into, args=(running,), name="backlog-read", daemon=True
        ).start()
        try:
            depth = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(running)), timeout=self._timeout_s
            )
        except TimeoutError:
            return self._failed(f"the broker did not answer within {self._timeout_s:g} s", None)
        except Exception as exc:  # any client error: the broker is unreachable or refuses
            return self._failed("the broker could not be read", exc)
        return BacklogReading(depth=depth, error=None, taken_at=time.monotonic())

    def _read_into(self, future: concurrent.futures.Future[BrokerDepth]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(self._read())
        except BaseException as exc:
            future.set_exception(exc)

    @staticmethod
    def _failed(error: str, exc: BaseException | None) -> BacklogReading:
        # The client's own text (hosts, ports, account ids) goes to the log, not to whoever
        # reads the console or /metrics.
        log.warning("broker backlog unreadable", error=error, detail=exc and _reason(exc))
        return BacklogReading(depth=None, error=error, taken_at=time.monotonic())


_READERS: weakref.WeakKeyDictionary[JobSender, BacklogReader] = weakref.WeakKeyDictionary()


def backlog_reader(sender: JobSender) -> BacklogReader:
    """The one reader of ``sender``'s queue (its broker and queue name), made on first use:
    every caller in the process (the stats route, metrics) shares its cache."""
    reader = _READERS.get(sender)
    if reader is None:
        reader = _READERS[sender] = BacklogReader(sender.broker, sender.queue_name)
    return reader

"""Job change notifications, for the events stream (``GET /api/v1/jobs/{id}/events``).

A ``JobEvents`` hub per API process tells each subscriber "job X may have changed: read it
again". It never says what changed: the subscriber re-reads the row, so a notification
lost, doubled or merged with another costs nothing but a read.

- Postgres: a trigger (migration 0005) runs ``pg_notify('taskoverflow_jobs', id)`` on every
  change of a job's status, stage, progress or cancel request. The hub LISTENs on one
  connection of its own, opened when the first subscriber arrives and kept until shutdown,
  and wakes the subscribers of the job named in each notification. The connection is
  checked out of the API's engine and detached from its pool, so it is made exactly like
  every other (TLS, password from the secret, server settings) without taking a pooled
  connection from the requests: a process holds its pool plus this one. If it dies (a
  restart, a failover, ``pg_terminate_backend``), the hub reconnects with backoff and wakes
  every subscriber, since changes made while nobody listened were never announced.
  Subscribers also re-read every ``RECHECK_S`` seconds: a safety net, not the mechanism.
- Any other database (SQLite: the zero-setup single process, where the worker shares the
  process) has no NOTIFY: subscribers re-read every ``POLL_S`` seconds instead.

Shutdown: uvicorn runs the app's shutdown hooks only once every connection has closed, and
an events stream stays open as long as its job runs. So the hub ends every stream as soon
as the process is told to stop (it chains itself before the server's SIGTERM/SIGINT
handlers), and ``close`` (a shutdown hook) ends them too and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from api.database import checkout_live

log = structlog.get_logger("api")

#: The channel migration 0005's trigger notifies; the payload is the job's id.
CHANNEL = "taskoverflow_jobs"

#: Database connections an API process holds besides its pool: the one it LISTENs on
#: (ops/terraform budgets the database's connections with it).
LISTEN_CONNECTIONS = 1

#: With NOTIFY: seconds between re-reads of a job nobody announced a change of.
RECHECK_S = 5.0
#: Without NOTIFY: seconds between re-reads of a job (its progress is written at most every
#: ~0.5 s, so a change shows within a fraction of that).
POLL_S = 0.25

#: Reconnect delays of the LISTEN connection: doubling from the first to the last.
BACKOFF_S = (0.1, 5.0)
#: How often the LISTEN connection is checked: whether it is closed (cheap, local) ...
CHECK_S = 1.0
#: ... and, every so many seconds, a round trip (a half-open connection never closes).
PROBE_S = 15.0
PROBE_TIMEOUT_S = 5.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Subscription:
    """One stream's interest in one job: woken when it may have changed."""

    def __init__(self, hub: JobEvents, job_id: str) -> None:
        self.job_id = job_id
        self._hub = hub
        self._woken = asyncio.Event()

    @property
    def closing(self) -> bool:
        """The process is stopping: end the stream (the client reconnects elsewhere)."""
        return self._hub.closing

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, timeout: float) -> bool:
        """Until the job may have changed (True) or ``timeout`` seconds passed (False)."""
        if not self._woken.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout)
        woken = self._woken.is_set()
        self._woken.clear()
        return woken


class JobEvents:
    """The process's hub: subscriptions by job, and the LISTEN connection on Postgres."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        #: Whether changes are announced (Postgres); otherwise subscribers poll.
        self.notifies = engine.dialect.name == "postgresql"
        #: Seconds a subscriber waits for a wake-up before it re-reads anyway.
        self.recheck_s = RECHECK_S if self.notifies else POLL_S
        self.closing = False
        #: LISTEN connections opened so far (the first, then one per reconnect).
        self.connections_opened = 0
        self._subscribers: dict[str, set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._chained: dict[int, Any] = {}

    # --- Introspection (the stream's end is logged with it; the tests read that) -----------

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    # --- Subscribing --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: uuid.UUID) -> AsyncIterator[Subscription]:
        """A subscription to ``job_id`` for the block. Subscribe first, then read the job:
        a change made between the two is then announced, never missed."""
        key = str(job_id)  # the trigger's payload: id::text, the same canonical form
        sub = Subscription(self, key)
        self._subscribers.setdefault(key, set()).add(sub)
        self._start_listening()
        try:
            yield sub
        finally:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[key]

    def _wake(self, key: str) -> None:
        for sub in self._subscribers.get(key, ()):
            sub.wake()

    def _wake_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake()

    # --- Stopping -------------------------------------------------------------------------

    def end_streams(self) -> None:
        """Every stream ends at its next step; those that start later end after their first
        event. For shutdown: the server waits for open responses before it stops."""
        self.closing = True
        self._wake_all()

    def end_streams_on_signals(self) -> None:
        """End the streams as soon as SIGTERM or SIGINT arrives, then let the handler that
        was there (the server's) do what it does. Only from the main thread, the only one
        that may set signal handlers (a test client runs the app in another: nothing to
        do, its shutdown hook ends the streams)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue  # default or ignored: the process's behaviour is not ours to change
            self._chained[sig] = previous
            signal.signal(sig, self._signal_handler(loop, previous))

    def _signal_handler(
        self, loop: asyncio.AbstractEventLoop, previous: Callable[[int, FrameType | None], Any]
    ) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            # A signal handler runs between two bytecodes of the loop's thread: schedule the
            # wake-ups rather than touch asyncio objects from here.
            loop.call_soon_threadsafe(self.end_streams)
            previous(signum, frame)

        return handler

    async def close(self) -> None:
        """Shutdown hook: end the streams, stop listening, close the connection."""
        self.end_streams()
        for sig, previous in self._chained.items():
            with contextlib.suppress(ValueError):  # not the main thread any more
                signal.signal(sig, previous)
        self._chained.clear()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    # --- The LISTEN connection ------------------------------------------------------------

    def _start_listening(self) -> None:
        if self.notifies and self._listener is None and not self.closing:
            # A context of its own: not the request's that happened to start it (its logs
            # would carry that request's id for the life of the process).
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="job-events-listener", context=contextvars.Context()
            )

    async def _listen(self) -> None:
        delay = BACKOFF_S[0]
        while not self.closing:
            try:
                conn = await self._connect()
            except Exception as exc:
                log.warning("job events: cannot listen", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            delay = BACKOFF_S[0]
            self.connections_opened += 1
            log.info(
                "job events: listening",
                server_pid=conn.get_server_pid(),
                connections_opened=self.connections_opened,
            )
            # Changes made while nobody listened (before this connection, or between the
            # last one's death and now) were announced to no one: everyone reads again.
            self._wake_all()
            try:
                await self._watch(conn)
            finally:
                await _discard(conn)
            if not self.closing:
                log.warning("job events: connection lost, reconnecting")

    async def _connect(self) -> asyncpg.Connection:
        checked_out = await checkout_live(self._engine)
        if checked_out is None:
            raise ConnectionError("the pooled connection was closed by the server")
        pooled, conn = checked_out
        # Ours from now on: the pool forgets it (and may open another in its place).
        pooled.detach()
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            await _discard(conn)
            raise
        return conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._wake(payload)

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Until ``conn`` is lost (or the hub closes)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        since_probe = 0.0
        while not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), CHECK_S)
            if lost.is_set() or conn.is_closed():
                return
            since_probe += CHECK_S
            if since_probe >= PROBE_S:
                since_probe = 0.0
                try:
                    await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
                except Exception as exc:
                    log.warning("job events: connection probe failed", error=repr(exc))
                    return


async def _discard(conn: asyncpg.Connection) -> None:
    """Close ``conn`` politely if it answers in time, else drop it."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), PROBE_TIMEOUT_S)
    except Exception:
        conn.terminate()
    except BaseException:  # cancelled while closing: still drop it
        conn.terminate()
        raise

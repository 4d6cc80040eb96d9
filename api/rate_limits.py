"""Per-client rate limits, counted where every API process sees them.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one number):
for a limit of N requests a minute, each request moves the client's "theoretical arrival
time" (TAT) ``60/N`` s later, starting from now if it lies in the past; a request is allowed
while the TAT stays within a minute of now. A client can burst N requests, then goes at N a
minute; one number per client, updated in one atomic step, and the answers to the
``RateLimit-*`` headers fall out of it:

- remaining: how many more requests fit before the TAT would pass now + 60 s;
- reset: seconds until the TAT is now again (the whole minute's worth is back);
- retry after (refused): seconds until one request fits again.

Stores (``RATE_LIMIT_STORE``): Redis (a Lua script, on the server's clock), Postgres (one
``INSERT ... ON CONFLICT`` on the UNLOGGED ``rate_limits`` table, on the database's clock),
or this process's memory. A store that cannot be reached lets requests through (logged):
a rate limit protects the service, and must not become the way it fails.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy import Float, String, bindparam, text

from api.database import Database, Query

log = structlog.get_logger("api")

#: Every limit is per minute; a client may spend a whole minute's worth at once.
WINDOW_S = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The RateLimit header fields (draft-ietf-httpapi-ratelimit-headers, the
        separate-fields form most clients read), and Retry-After when refused."""
        fields = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_s).encode()),
            (b"ratelimit-policy", f"{self.limit};w={int(WINDOW_S)}".encode()),
        ]
        if not self.allowed:
            fields.append((b"retry-after", str(self.retry_after_s).encode()))
        return fields


def decide(limit: int, allowed: bool, ahead_s: float) -> Decision:
    """The decision for a store's answer: ``ahead_s`` is the client's TAT minus now, after
    this request if it was allowed, as it stands if not."""
    interval = WINDOW_S / limit
    if allowed:
        remaining = max(0, math.floor((WINDOW_S - ahead_s) / interval + 1e-9))
        return Decision(True, limit, remaining, math.ceil(ahead_s), 0)
    retry = max(1, math.ceil(ahead_s + interval - WINDOW_S))
    return Decision(False, limit, 0, math.ceil(ahead_s), retry)


class Store(Protocol):
    async def hit(self, key: str, interval_s: float) -> tuple[bool, float]:
        """Count one request of ``key``: (allowed, TAT - now as in ``decide``)."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """This process only (the single-process run, tests)."""

    #: Entries kept at most; beyond it, those whose TAT has passed (worthless) are dropped.
    MAX_KEYS = 100_000

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._tat: dict[str, float] = {}
        self._clock = clock

    async def hit(self, key: str, interval_s: float) -> tuple[bool, float]:
        now = self._clock()
        tat = max(self._tat.get(key, now), now) + interval_s
        if tat - now > WINDOW_S + 1e-9:
            return False, self._tat[key] - now
        if len(self._tat) >= self.MAX_KEYS and key not in self._tat:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
            if len(self._tat) >= self.MAX_KEYS // 2:  # mostly live: forgive all, rarely
                self._tat.clear()
        self._tat[key] = tat
        return True, tat - now

    async def close(self) -> None:
        pass


#: KEYS[1] the client's key; ARGV[1] the interval, ARGV[2] the window. Server clock (TIME):
#: every API process agrees on it. Floats are kept and returned as strings to the
#: microsecond (a Lua number returned becomes an integer; tostring keeps 14 digits only).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = math.max(tat, now) + interval
if new - now > window + 0.000001 then
  return {0, string.format('%.6f', tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil((new - now) * 1000))
return {1, string.format('%.6f', new - now)}
"""


class RedisStore:
    def __init__(self, url: str, namespace: str) -> None:
        import redis.asyncio  # only API processes counting in Redis load the async client

        # A blocking pool: a burst wider than the pool waits for a connection (briefly)
        # instead of failing, which the limiter would take for an outage and let through.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=2, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._pool = pool
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self._script = self._client.register_script(_GCRA_LUA)
        self._prefix = f"{namespace}:ratelimit:"

    async def hit(self, key: str, interval_s: float) -> tuple[bool, float]:
        allowed, ahead = await self._script(keys=[self._prefix + key], args=[interval_s, WINDOW_S])
        return bool(allowed), float(ahead)

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()  # a pool given to the client is not the client's to close


#: The statement's start (its own transaction): one "now" throughout it.
_NOW_SQL = "extract(epoch FROM now())"

#: Allowed: the row's new TAT - now; refused (the update's WHERE fails): no row.
_PG_HIT = Query(
    text(
        f"""
        INSERT INTO rate_limits AS r (key, tat) VALUES (:key, {_NOW_SQL} + :interval)
        ON CONFLICT (key) DO UPDATE
          SET tat = greatest(r.tat, {_NOW_SQL}) + :interval
          WHERE greatest(r.tat, {_NOW_SQL}) + :interval - {_NOW_SQL} <= :window + 1e-9
        RETURNING tat - {_NOW_SQL}
        """  # noqa: S608 (a constant expression, no input)
    ).bindparams(
        bindparam("key", type_=String),
        bindparam("interval", type_=Float),
        bindparam("window", type_=Float),
    )
)
_PG_AHEAD = Query(
    text(f"SELECT tat - {_NOW_SQL} FROM rate_limits WHERE key = :key").bindparams(  # noqa: S608
        bindparam("key", type_=String)
    )
)
#: Rows whose TAT has passed say nothing a missing row would not: dropped now and then.
_PG_FORGET = Query(text(f"DELETE FROM rate_limits WHERE tat < {_NOW_SQL}"))  # noqa: S608


class PostgresStore:
    #: One request in this many also drops the rows that no longer matter.
    FORGET_EVERY = 10_000

    def __init__(self, db: Database) -> None:
        self._db = db
        self._hits = 0

    async def hit(self, key: str, interval_s: float) -> tuple[bool, float]:
        self._hits += 1
        if self._hits % self.FORGET_EVERY == 0:
            await self._db.execute(_PG_FORGET)
        row = await self._db.execute(_PG_HIT, key=key, interval=interval_s, window=WINDOW_S)
        if row is not None:
            return True, float(row[0])
        ahead = await self._db.fetch_one(_PG_AHEAD, key=key)
        return False, WINDOW_S if ahead is None else float(ahead[0])

    async def close(self) -> None:
        pass


@dataclass
class _Lease:
    """Requests of a client's budget taken from the store, not yet spent, until ``until``."""

    left: int
    until: float
    remaining: int  # the store's count of what remained besides them
    reset_s: int


#: Methods that only read: the reads' budget; everything else spends the writes' budget.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RateLimiter:
    """The limits per client and kind of request (RATE_LIMIT_READS/WRITES_PER_MINUTE)."""

    #: Refusals, leases and rate counts remembered at most (beyond it the lapsed ones go).
    MAX_KEYS = 10_000
    #: A busy client's process takes up to this many requests of its budget at a time.
    MAX_LEASE = 64
    #: Unused leased requests lapse after this long (the client has slowed down).
    LEASE_S = 1.0

    def __init__(
        self,
        store: Store,
        *,
        reads_per_minute: int,
        writes_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._limits = {"reads": reads_per_minute, "writes": writes_per_minute}
        self._warned_at = 0.0
        self._clock = clock
        # Refused clients' TAT, on this process's clock. While a client is refused its TAT
        # cannot move back (only allowed requests move it, and only later), so until it is
        # within reach again every process can refuse it without asking the store: a flood
        # of refused requests costs no store round trip (nor, with the Postgres store, two
        # queries each), exactly the same answers.
        self._refused: dict[str, float] = {}
        # Leases: a client sending many requests a second to this process has its budget
        # taken from the store several requests at a time (one round trip for up to
        # MAX_LEASE), spent here. Never more than the budget (each request spent was taken
        # from the store); at worst a lease's unspent rest lapses, refusing a busy client a
        # little early. A client at a human pace is asked about one request at a time.
        self._leases: dict[str, _Lease] = {}
        # Requests per key in this second and the one before: how busy each client is.
        self._seen: dict[str, tuple[int, int, int]] = {}
        # A busy key's store call in flight, and how many requests waited for the last one.
        self._asking: dict[str, asyncio.Future[None]] = {}
        self._waiting: dict[str, int] = {}

    async def check(self, client: str, method: str) -> Decision | None:
        """The decision on one request of ``client``'s, None if unlimited (or the store is
        unreachable: then the request goes through)."""
        budget = "reads" if method in READ_METHODS else "writes"
        limit = self._limits[budget]
        if not limit:
            return None
        key, interval, now = f"{budget}:{client}", WINDOW_S / limit, self._clock()
        tat = self._refused.get(key)
        if tat is not None:
            if tat - now + interval > WINDOW_S + 1e-9:
                return decide(limit, False, tat - now)
            del self._refused[key]
        spent = self._spend_lease(key, limit, now)
        if spent is not None:
            return spent
        size = min(self._busy(key, now), limit)
        if size == 1:
            return await self._ask(key, limit, interval, 1, now)
        # A busy client's concurrent requests wait for the one asking the store (all woken
        # together when it answers), then spend what it leased, instead of each asking. The
        # next lease covers as many as waited for this one.
        while (asking := self._asking.get(key)) is not None:
            self._waiting[key] = self._waiting.get(key, 0) + 1
            await asyncio.shield(asking)
            spent = self._spend_lease(key, limit, self._clock())
            if spent is not None:
                return spent
        asking = asyncio.get_running_loop().create_future()
        self._asking[key] = asking
        waited = self._waiting.pop(key, 0)
        try:
            size = min(max(size, waited + 1), self.MAX_LEASE, limit)
            return await self._ask(key, limit, interval, size, self._clock())
        finally:
            del self._asking[key]
            asking.set_result(None)

    def _spend_lease(self, key: str, limit: int, now: float) -> Decision | None:
        lease = self._leases.get(key)
        if lease is None or not lease.left or now >= lease.until:
            return None
        lease.left -= 1
        return Decision(True, limit, lease.remaining + lease.left, lease.reset_s, 0)

    async def _ask(
        self, key: str, limit: int, interval: float, size: int, now: float
    ) -> Decision | None:
        """Take ``size`` requests of ``key``'s budget from the store (one, if not that many
        are left): the decision on this request; the rest leased."""
        try:
            allowed, ahead = await self.store.hit(key, interval * size)
            if not allowed and size > 1:  # near the limit: one at a time, exactly
                size = 1
                allowed, ahead = await self.store.hit(key, interval)
        except Exception as exc:
            # Whatever the store's trouble (unreachable, a table not migrated yet, a
            # connection in a bad state), the request goes through, and the log says why.
            self._warn(exc)
            return None
        if len(self._refused) + len(self._leases) + len(self._seen) >= self.MAX_KEYS:
            self._forget(now)
        decision = decide(limit, allowed, ahead)
        if not allowed:
            self._refused[key] = now + ahead
        elif size > 1:
            self._leases[key] = _Lease(
                size - 1, now + self.LEASE_S, decision.remaining, decision.reset_s
            )
            return Decision(True, limit, decision.remaining + size - 1, decision.reset_s, 0)
        return decision

    def _busy(self, key: str, now: float) -> int:
        """How many requests to take for ``key`` at once: an eighth of its requests here in
        the last whole second (1 for anyone below 16 a second)."""
        second = int(now)
        current, count, before = self._seen.get(key, (second, 0, 0))
        if current != second:
            before = count if current == second - 1 else 0
            current, count = second, 0
        self._seen[key] = (current, count + 1, before)
        return max(1, min(self.MAX_LEASE, before // 8))

    def _forget(self, now: float) -> None:
        self._refused = {k: t for k, t in self._refused.items() if t > now}
        self._leases = {k: lease for k, lease in self._leases.items() if lease.until > now}
        second = int(now)
        self._seen = {k: seen for k, seen in self._seen.items() if seen[0] >= second - 1}
        self._waiting = {k: n for k, n in self._waiting.items() if k in self._asking}

    def _warn(self, exc: BaseException) -> None:
        # At most one line every 10 s: an outage must not flood the log as well.
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning("rate limit store unreachable: not limiting", error=repr(exc))

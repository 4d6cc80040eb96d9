"""The pure parts of the door (api.access): client addresses behind proxies, the GCRA
arithmetic, API key entries, which requests need a key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import ip_network

import pytest

from api.access import needs_key
from api.client_address import client_key, forwarded_client, resolve_client
from api.keys import key_hash, main, new_key
from api.rate_limits import MemoryStore, decide
from models.settings import AccessSettings, ConfigError, LimitSettings, parse_api_key_hashes

ALB = [ip_network("10.0.0.0/16")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", [], "203.0.113.9"),  # no proxy
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),  # untrusted peer: the header is a claim
        ("10.0.1.5", ["198.51.100.7"], "198.51.100.7"),  # through the ALB
        # The client wrote its own X-Forwarded-For; the ALB appended the real address.
        ("10.0.1.5", ["1.2.3.4", "198.51.100.7"], "198.51.100.7"),
        # Two trusted hops: the first untrusted address from the right.
        ("10.0.1.5", ["198.51.100.7", "10.0.2.9"], "198.51.100.7"),
        ("10.0.1.5", ["10.0.3.3"], "10.0.3.3"),  # all trusted: the left-most
        ("10.0.1.5", ["1.2.3.4", "not-an-ip"], "10.0.1.5"),  # garbage: stop believing
        ("10.0.1.5", [], "10.0.1.5"),
    ],
)
def test_the_client_is_the_first_untrusted_address_from_the_right(peer, forwarded, client):
    assert forwarded_client(peer, forwarded, ALB) == client


def test_resolve_client_rewrites_the_scope_only_through_a_trusted_proxy():
    def scope(peer: str) -> dict:
        return {
            "type": "http",
            "client": (peer, 4000),
            "scheme": "http",
            "headers": [
                (b"x-forwarded-for", b"1.2.3.4, 198.51.100.7"),
                (b"x-forwarded-proto", b"https"),
            ],
        }

    trusted = scope("10.0.1.5")
    assert resolve_client(trusted, ALB) == "198.51.100.7"  # type: ignore[arg-type]
    assert trusted["client"][0] == "198.51.100.7"
    assert trusted["scheme"] == "https"
    spoofed = scope("203.0.113.9")
    assert resolve_client(spoofed, ALB) == "203.0.113.9"  # type: ignore[arg-type]
    assert spoofed["scheme"] == "http"
    assert resolve_client(scope("10.0.1.5"), []) == "10.0.1.5"  # type: ignore[arg-type]


def test_client_keys_group_ipv6_by_64():
    assert client_key("203.0.113.9") == "ip:203.0.113.9"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:203.0.113.9") == "ip:203.0.113.9"
    assert client_key("testclient") == "ip:testclient"


def test_gcra_decisions():
    # 60 a minute: one a second. After the first request, 59 left, full again in 1 s.
    first = decide(60, True, 1.0)
    assert (first.remaining, first.reset_s) == (59, 1)
    last = decide(60, True, 60.0)
    assert last.remaining == 0
    refused = decide(60, False, 59.5)
    assert refused.retry_after_s == 1
    assert not refused.allowed
    assert dict(refused.headers())[b"retry-after"] == b"1"
    assert b"retry-after" not in dict(first.headers())


def test_the_memory_store_bursts_a_minute_then_refills_at_the_rate():
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])

    def hit() -> bool:
        return asyncio.run(store.hit("k", 60 / 10))[0]

    assert [hit() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 6  # one interval
    assert [hit(), hit()] == [True, False]
    now[0] += 60
    assert sum(hit() for _ in range(12)) == 10


def test_only_writes_and_job_endpoints_need_a_key():
    assert needs_key("POST", "/api/v1/todos")
    assert needs_key("DELETE", "/api/v1/todos/3")
    assert needs_key("GET", "/api/v1/todos/ical/abc/status")
    assert needs_key("GET", "/api/v1/jobs")
    assert not needs_key("GET", "/api/v1/todos")
    assert not needs_key("GET", "/")
    assert not needs_key("GET", "/static/app.js")
    assert not needs_key("GET", "/schema/openapi.json")


def test_key_entries_hold_hashes_only(capsys):
    key = new_key()
    entry = f"alice:{key_hash(key)}"
    assert parse_api_key_hashes(f"{entry}, bob:{'a' * 64}\n", "API_KEYS") == {
        key_hash(key): "alice",
        "a" * 64: "bob",
    }
    with pytest.raises(ConfigError) as refused:
        parse_api_key_hashes(f"alice:{key}", "API_KEYS")  # a key where its hash belongs
    assert key not in str(refused.value)
    assert main(["new", "ci"]) == 0
    printed = capsys.readouterr().out
    made = printed.split("key:")[1].split()[0]
    assert f"ci:{key_hash(made)}" in printed
    assert main(["new", "bad name"]) == 2


def test_access_and_limit_settings_refuse_nonsense():
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        AccessSettings.from_env({"TRUSTED_PROXIES": "10.0.0.0/33"})
    with pytest.raises(ConfigError, match="CORS_ALLOW_ORIGINS"):
        AccessSettings.from_env({"CORS_ALLOW_ORIGINS": "example.com"})
    with pytest.raises(ConfigError, match="API_KEYS_SECRET_ARN"):
        AccessSettings.from_env({"API_KEYS_SECRET_ARN": "my-secret"})
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORE"):
        LimitSettings.from_env({"RATE_LIMIT_STORE": "mysql://x"})
    with pytest.raises(ConfigError, match="TODOS_MAX"):
        LimitSettings.from_env({"TODOS_MAX": "0"})
    assert AccessSettings.from_env({"API_KEYS": f"a:{'0' * 64}"}).keys_required
    assert not AccessSettings.from_env({}).keys_required


def test_the_rate_limit_store_defaults_to_what_the_deployment_shares():
    from models.settings import Settings

    base = {"DATABASE_URL": "postgresql://u@db/x", "BROKER_URL": "redis://r:6379/0"}
    assert Settings.from_env(base).rate_limit_store == "redis://r:6379/0"
    sqs = {**base, "BROKER_URL": "sqs://"}
    assert Settings.from_env(sqs).rate_limit_store == "postgres"
    single = {"DATABASE_URL": "sqlite:///x.db", "BROKER_URL": "memory://"}
    assert Settings.from_env(single).rate_limit_store == "memory"
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORE=memory"):
        Settings.from_env({**sqs, "TASKOVERFLOW_ENV": "production", "RATE_LIMIT_STORE": "memory"})
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORE=postgres"):
        Settings.from_env({**single, "RATE_LIMIT_STORE": "postgres"})


class Counting(MemoryStore):
    """A memory store that counts its calls; ``round_trip``: each call yields to the event
    loop, as a real store's network round trip would (other requests run meanwhile)."""

    def __init__(self, clock: Callable[[], float], *, round_trip: bool = False) -> None:
        super().__init__(clock=clock)
        self.calls = 0
        self._round_trip = round_trip

    async def hit(self, key: str, interval_s: float) -> tuple[bool, float]:
        self.calls += 1
        if self._round_trip:
            await asyncio.sleep(0)
        return await super().hit(key, interval_s)


def test_a_refused_client_is_refused_locally_until_its_turn_then_asks_the_store_again():
    from api.rate_limits import RateLimiter

    now = [0.0]

    store = Counting(clock=lambda: 5000 + now[0])
    limiter = RateLimiter(store, reads_per_minute=0, writes_per_minute=6, clock=lambda: now[0])

    def check() -> bool:
        decision = asyncio.run(limiter.check("ip:a", "POST"))
        assert decision is not None
        return decision.allowed

    assert [check() for _ in range(6)] == [True] * 6
    assert [check() for _ in range(50)] == [False] * 50
    assert store.calls == 7  # one refusal from the store, 49 from memory
    now[0] += 9.9
    assert not check()
    now[0] += 0.2  # one interval (10 s) after the burst: room for one again
    assert check()
    assert store.calls == 8
    # Another client is not affected by a's refusal.
    assert asyncio.run(limiter.check("ip:b", "POST")).allowed  # type: ignore[union-attr]


def test_a_busy_client_is_leased_its_budget_in_batches_and_never_gets_more_than_it():
    from api.rate_limits import RateLimiter

    now = [0.0]

    store = Counting(clock=lambda: 7000 + now[0])
    limiter = RateLimiter(store, reads_per_minute=600, writes_per_minute=0, clock=lambda: now[0])

    def second_of(requests: int) -> list[bool]:
        allowed = []
        for _ in range(requests):
            decision = asyncio.run(limiter.check("ip:busy", "GET"))
            assert decision is not None
            allowed.append(decision.allowed)
            now[0] += 1 / requests
        return allowed

    first = second_of(300)  # one request at a time until the limiter has seen a busy second
    assert store.calls == 300
    second = second_of(300)
    assert store.calls - 300 <= 300 // 16 + 2  # leased: one store call per 16 requests
    third = second_of(1000)  # far past the budget (600 a minute, a minute's worth at once)
    allowed = sum(first) + sum(second) + sum(third)
    # Never over the budget (600, plus 10 a second of refill over 3 s), and a lease's lapse
    # refuses little early.
    assert 600 - 16 <= allowed <= 630, allowed
    # A quiet client is asked about one request at a time (exact near its limit).
    quiet = [asyncio.run(limiter.check("ip:quiet", "GET")) for _ in range(3)]
    assert [d.remaining for d in quiet if d] == [599, 598, 597]


def test_a_busy_clients_concurrent_requests_share_one_store_call_per_lease():
    from api.rate_limits import RateLimiter

    now = [0.0]
    limiter = RateLimiter(
        (store := Counting(clock=lambda: now[0], round_trip=True)),
        reads_per_minute=10**8,
        writes_per_minute=0,
        clock=lambda: now[0],
    )

    async def waves(count: int) -> None:
        for _ in range(count):
            decisions = await asyncio.gather(*(limiter.check("ip:b", "GET") for _ in range(32)))
            assert all(d is not None and d.allowed for d in decisions)
            now[0] += 0.005

    asyncio.run(waves(200))  # 1 s at 6,400 requests a second: the limiter learns it is busy
    before = store.calls
    asyncio.run(waves(100))
    assert store.calls - before <= 3200 // 16 + 10, store.calls - before

"""Who is asking: the client's address (and the request's scheme) behind trusted proxies.

Behind a load balancer every connection comes from the load balancer; the client is in the
``X-Forwarded-For`` header it appends to. Anyone can write that header too, so it is
believed only when the connection comes from a proxy we trust (``TRUSTED_PROXIES``), and
then read from the right: each trusted proxy appended the address it got the request from,
so the first address from the right that is not a trusted proxy is the client (the left
part is whatever the client claimed). ``X-Forwarded-Proto`` is believed on the same terms,
so the URLs handed out are https when the load balancer terminated TLS.

uvicorn's own ``--proxy-headers`` is turned off wherever we run it: this module is the one
place the decision is made, from our settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from litestar.types import HTTPScope

Networks = Sequence[IPv4Network | IPv6Network]


def _trusted(address: str, proxies: Networks) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in proxies)


def _header_values(scope: HTTPScope, name: bytes) -> list[str]:
    """Every comma-separated element of every ``name`` header, in order."""
    return [
        part.strip()
        for key, value in scope["headers"]
        if key == name
        for part in value.decode("latin-1").split(",")
    ]


def forwarded_client(peer: str, forwarded_for: list[str], proxies: Networks) -> str:
    """The client's address: ``peer``, unless it is a trusted proxy, in which case the
    right-most address of ``forwarded_for`` that is not one (all trusted: the left-most)."""
    if not _trusted(peer, proxies):
        return peer
    client = peer
    for address in reversed(forwarded_for):
        try:
            ip_address(address)
        except ValueError:
            break  # garbage (or an obfuscated hop): nothing left of it can be believed
        client = address
        if not _trusted(address, proxies):
            break
    return client


def resolve_client(scope: HTTPScope, proxies: Networks) -> str:
    """The request's client address; also rewrites the scope's ``client`` and ``scheme`` to
    the forwarded ones when they came through a trusted proxy (so logs and URLs agree)."""
    peer = scope["client"][0] if scope["client"] else ""
    if not proxies or not _trusted(peer, proxies):
        return peer
    client = forwarded_client(peer, _header_values(scope, b"x-forwarded-for"), proxies)
    if client != peer:
        scope["client"] = (client, 0)
    protos = _header_values(scope, b"x-forwarded-proto")
    if protos and protos[-1] in ("http", "https"):
        scope["scheme"] = protos[-1]
    return client


def client_key(address: str) -> str:
    """The rate-limit and quota identity of an address: IPv4 as it is, IPv6 by its /64 (one
    household or host gets a whole /64 and could otherwise rotate through it)."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return f"ip:{address or 'unknown'}"
    if isinstance(parsed, IPv6Address):
        if parsed.ipv4_mapped is not None:
            return f"ip:{parsed.ipv4_mapped}"
        return f"ip:{ip_network(f'{parsed}/64', strict=False)}"
    return f"ip:{parsed}"

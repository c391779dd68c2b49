"""Who sent a request, as far as the network can tell: the source address.

`X-Forwarded-For` is trusted only when the peer is a configured proxy (`ITSM_TRUSTED_PROXIES`):
the hops are read right to left, skipping trusted proxies, and the first hop that is not one is
the client. Anyone can write the header, so without trusted proxies it is ignored, and a hop
that is not an IP address ends the walk at the proxy that forwarded it.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import Scope

UNKNOWN = "unknown"


def header(scope: Scope, name: bytes) -> str:
    """The first value of header `name` (lower case), or ""."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _forwarded_hops(scope: Scope) -> list[str]:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def _parse(address: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(address)
    except ValueError:
        return None


def _trusted(address: str, proxies: Sequence[IPv4Network | IPv6Network]) -> bool:
    parsed = _parse(address)
    return parsed is not None and any(parsed in network for network in proxies)


def client_address(scope: Scope, trusted_proxies: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client's address: the peer's, or (behind trusted proxies) the nearest untrusted hop."""
    peer = scope.get("client")
    address = str(peer[0]) if peer else UNKNOWN
    if not trusted_proxies or not _trusted(address, trusted_proxies):
        return address
    for hop in reversed(_forwarded_hops(scope)):
        parsed = _parse(hop)
        if parsed is None:
            return address  # garbage in the header: the proxy that passed it on is all we know
        address = str(parsed)
        if not _trusted(address, trusted_proxies):
            return address
    return address

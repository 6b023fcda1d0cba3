"""Client addresses: the real client IP (forwarded headers believed only from trusted proxies), and the
rate-limit allow-list."""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """Parsed once per distinct list (settings are read per call, so a test's override takes effect)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        return None


def _is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    return address is not None and any(address in network for network in networks)


def is_trusted_proxy(peer: str) -> bool:
    """Whether the address that connected to us is one of TRUSTED_PROXIES."""
    return _is_trusted(_parse(peer))


def is_allowlisted(address: str) -> bool:
    """Whether a client address is in RATELIMIT_ALLOWLIST (exempt from the POST rate limit, e.g. load tests)."""
    if not settings.RATELIMIT_ALLOWLIST:
        return False
    parsed = _parse(address)
    return parsed is not None and any(parsed in network for network in _networks(tuple(settings.RATELIMIT_ALLOWLIST)))


def client_ip(request: HttpRequest) -> str:
    """RATELIMIT_IP_META_KEY: walk X-Forwarded-For from the right, skipping trusted proxies.

    The right-most untrusted address is the first one no proxy of ours vouches for: everything left of it could
    have been written by the client itself.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    if not _is_trusted(_parse(peer)):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed([part for part in forwarded.split(",") if part.strip()]):
        address = _parse(hop)
        if address is None:
            break  # garbage in the chain: stop believing it
        if not _is_trusted(address):
            return str(address)
    real_ip = _parse(request.META.get("HTTP_X_REAL_IP", ""))
    return str(real_ip) if real_ip is not None else peer

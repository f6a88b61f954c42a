"""The one guard for outbound connections to hosts a tenant chose (webhook URLs now,
connected SMTP/IMAP mailboxes next): only public addresses, unless the operator allows
a range (``outbound.allow_networks``).

A tenant must not use mailforge to reach what only mailforge can reach: loopback
services (the PowerDNS API, PostgreSQL), the private network, link-local cloud
metadata (169.254.169.254) and the like. Three rules make that hold:

- every address a host name resolves to is checked, and one address outside the
  public internet refuses the host (a name may answer a public and a private address);
- the connection is made to the address that was checked, never after a second DNS
  lookup (DNS rebinding): for aiohttp, :class:`GuardedResolver` is the session's
  resolver, so the connector connects to the checked addresses while the Host header
  and TLS SNI keep the name; IP literals, which aiohttp never resolves, are checked
  by :meth:`Guard.check_url` before the request;
- IPv6 forms that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by the
  embedded address.

Redirects are not followed by the callers (a redirect could lead anywhere).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What a delivery record says about a refused destination: nothing about what (if
# anything) listens there.
BLOCKED_TEXT = "blocked: destination not allowed"

# Not the public internet, whatever the Python version thinks (its lists changed
# between releases): the IANA special-purpose registries, spelled out.
_V4_SPECIAL = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"))
# IPv6: only global unicast (2000::/3) is public, less these special ranges.
_V6_GLOBAL = ipaddress.IPv6Network("2000::/3")
_V6_SPECIAL = tuple(ipaddress.IPv6Network(n) for n in (
    "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16"))
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
MAX_URL = 2000


class Blocked(OSError):
    """The destination is not allowed. An OSError, so that aiohttp reports it from its
    resolver as a connection error (ClientConnectorDNSError) like any failed lookup."""

    def __init__(self, host: str) -> None:
        super().__init__(f"destination {host} is not allowed")
        self.host = host


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    for net in _NAT64:
        if ip in net:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """True for an address of the public internet (unicast, globally routable)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
        if ip not in _V6_GLOBAL or any(ip in n for n in _V6_SPECIAL):
            return False
    elif any(ip in n for n in _V4_SPECIAL):
        return False
    return bool(ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified))


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The operator's allowed ranges (CIDR); ValueError names the bad one."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=True))
        except ValueError as exc:
            raise ValueError(f"{v!r} is not a network in CIDR form ({exc})") from None
    return tuple(out)


def _normal(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class Guard:
    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, networks: Iterable[str]) -> Guard:
        return cls(parse_networks(networks))

    def allowed(self, ip: IPAddress | str) -> bool:
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                return False
        ip = _normal(ip)
        if any(ip.version == net.version and ip in net for net in self.allow):
            return True
        return is_public(ip)

    def check_host(self, host: str) -> None:
        """Refuse an IP literal that is not allowed (names are checked when resolved)."""
        ip = ip_literal(host)
        if ip is not None and not self.allowed(ip):
            raise Blocked(host)
        if is_local_name(host):
            raise Blocked(host)

    def check_url(self, url: str | URL) -> None:
        u = URL(url) if isinstance(url, str) else url
        self.check_host(u.raw_host or "")

    def check_resolved(self, host: str, addresses: Iterable[str]) -> list[str]:
        addrs = list(addresses)
        if not addrs or not all(self.allowed(a) for a in addrs):
            raise Blocked(host)
        return addrs

    def resolver(self) -> GuardedResolver:
        return GuardedResolver(self)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses of *host* for a client that is not aiohttp (SMTP, IMAP
        of connected mailboxes): connect to one of these (``asyncio.open_connection(addr,
        port, server_hostname=host)`` for TLS), never to the name again."""
        ip = ip_literal(host)
        if ip is not None:
            if not self.allowed(ip):
                raise Blocked(host)
            return [str(ip)]
        if is_local_name(host):
            raise Blocked(host)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        return self.check_resolved(host, list(dict.fromkeys(str(i[4][0]) for i in infos)))


def ip_literal(host: str) -> IPAddress | None:
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        return None


def is_local_name(host: str) -> bool:
    """``localhost`` and ``*.localhost`` (RFC 6761) always mean this machine."""
    h = host.lower().rstrip(".")
    return h == "localhost" or h.endswith(".localhost")


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that answers only allowed addresses, so the connector
    connects to exactly what the guard checked."""

    def __init__(self, guard: Guard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if is_local_name(host):
            raise Blocked(host)
        results = await self._inner.resolve(host, port, family)
        self.guard.check_resolved(host, [str(r["host"]) for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


def validate_url(value: Any, guard: Guard, field: str = "url") -> list[str]:
    """Problems of a tenant-given http(s) URL, each naming *field*: scheme, host (a DNS
    name or an IP address), no user info, port, length, and an IP literal the guard
    refuses. A host name is resolved only when it is used (then by the guard)."""
    if not isinstance(value, str):
        return [f"{field}: must be a string"]
    if not 1 <= len(value) <= MAX_URL:
        return [f"{field}: must be 1 to {MAX_URL} characters"]
    if not _URL_CHARS.fullmatch(value):
        return [f"{field}: must not contain spaces, control or non-ASCII characters"]
    if not re.match(r"https?://", value):
        return [f"{field}: must be an http:// or https:// URL"]
    try:
        u = URL(value)
        port = u.port
        host = u.raw_host
    except (ValueError, TypeError):
        return [f"{field}: is not a valid URL"]
    # The authority as written (yarl normalises some spellings away).
    authority = re.split(r"[/?#]", value.split("//", 1)[1], maxsplit=1)[0]
    if u.raw_user is not None or u.raw_password is not None or "@" in authority:
        return [f"{field}: must not contain a user name or password"]
    if not host:
        return [f"{field}: must name a host"]
    if re.search(r":[^\]]*$", authority) and not re.search(r":[1-9]\d{0,4}$", authority):
        return [f"{field}: port must be 1-65535"]
    if port is None or not 1 <= port <= 65535:
        return [f"{field}: port must be 1-65535"]
    if u.fragment:
        return [f"{field}: must not have a fragment"]
    ip = ip_literal(host)
    if ip is None:
        if "%" in host or ":" in host:
            return [f"{field}: is not a valid IP address"]
        name = host.lower().rstrip(".")
        labels = name.split(".")
        if len(name) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels) \
                or not re.search(r"[a-z]", labels[-1]):
            return [f"{field}: host must be a DNS name or an IP address"]
        if _legacy_ipv4(name):
            return [f"{field}: write an IPv4 address as four decimal numbers"]
    try:
        guard.check_host(host)
    except Blocked:
        return [f"{field}: the destination is not allowed (loopback, private, link-local "
                "or reserved address)"]
    return []


def _legacy_ipv4(name: str) -> bool:
    """Hex or octal spellings such as 0x7f000001 that resolvers read as IPv4."""
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True

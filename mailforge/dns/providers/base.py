"""The DNS provider plugin interface, its loader, and shared HTTP error mapping.

A provider hosts (or fronts) the zone of a domain: it lists the zone's records,
applies rrset changes computed by ``mailforge.dns.plan``, creates the zone when it
can, names the nameservers to delegate to, and says which servers answer for the zone
(verification queries them directly). Errors follow the engine's split:
``TemporaryError`` (with the provider's Retry-After as delay) or ``PermanentError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

import dns.asyncresolver
import dns.exception

from ...config import Config
from ...errors import PermanentError, TemporaryError
from ..plan import RRsetChange
from ..records import Record, fqdn

GROUP = "mailforge.dns_providers"


class ZoneExists(PermanentError):
    """The provider already has a zone of this name that mailforge did not create for a
    domain (the operator's own zone, say): adopting it would hand its records to a
    tenant. Connect answers 409 ``zone_exists``; the engine fails the domain."""


class DnsProvider(Protocol):
    name: str
    # False for ``manual``: nothing is published, records are shown to the operator.
    publishes: bool

    async def ensure_zone(self, zone: str) -> list[str]:
        """Create the zone if missing (when the provider hosts zones); return the
        nameservers the domain should be delegated to."""
        ...

    async def list_records(self, zone: str) -> list[Record]: ...

    async def apply(self, zone: str, changes: Sequence[RRsetChange]) -> None: ...

    async def authoritative_servers(self, zone: str) -> list[tuple[str, int]]:
        """(address, port) of servers answering authoritatively for *zone*."""
        ...


class ProviderFactory(Protocol):
    def __call__(self, cfg: Config, credentials: str | None = None) -> DnsProvider: ...


def available() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_provider(name: str, cfg: Config, credentials: str | None = None) -> DnsProvider:
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not eps:
        raise PermanentError(f"unknown DNS provider {name!r} (installed: "
                             f"{', '.join(available())})")
    factory: ProviderFactory = eps[0].load()
    return factory(cfg, credentials)


def http_error(provider: str, status: int, message: str,
               retry_after: str | None = None) -> Exception:
    """Map an HTTP answer to a retry decision: 429 and 5xx are temporary."""
    if status == 429 or status >= 500:
        delay: float | None = None
        if retry_after:
            try:
                delay = max(0.0, float(retry_after))
            except ValueError:
                delay = None
        return TemporaryError(f"{provider}: HTTP {status}: {message}", delay=delay)
    if status in (401, 403):
        return PermanentError(f"{provider}: HTTP {status}: credentials refused: {message}")
    return PermanentError(f"{provider}: HTTP {status}: {message}")


def make_resolver(resolver_spec: str, timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver asking *resolver_spec* (``host:port``; "" = the system's resolvers),
    giving up after *timeout* seconds per question."""
    res = dns.asyncresolver.Resolver(configure=not resolver_spec)
    if resolver_spec:
        host, _, port = resolver_spec.partition(":")
        res.nameservers, res.port = [host], int(port or 53)
    res.lifetime = timeout
    return res


async def resolve_ns_servers(zone: str, resolver_spec: str,
                             timeout: float) -> list[tuple[str, int]]:  # noqa: ASYNC109
    """Servers of the zone's delegation, found through a recursive resolver."""
    res = make_resolver(resolver_spec, timeout)
    try:
        ns = await res.resolve(zone, "NS")
        out: list[tuple[str, int]] = []
        for rr in ns:
            a = await res.resolve(str(rr.target), "A")
            out += [(str(x), 53) for x in a]
        return out
    except (TimeoutError, dns.exception.DNSException) as exc:
        raise TemporaryError(f"cannot find the nameservers of {zone}: {exc}") from None


@dataclass(frozen=True)
class Delegation:
    """What the public view says about a name's delegation."""

    # The nameservers the domain should be delegated to (its provider's), as FQDNs.
    wanted: tuple[str, ...]
    # The NS records found for the name through the resolver, as FQDNs.
    found: tuple[str, ...]

    @property
    def verified(self) -> bool:
        """Proof that whoever controls the name in public DNS chose this provider: every
        wanted nameserver is among the name's NS records. No wanted nameservers (the
        ``manual`` provider) proves nothing."""
        return bool(self.wanted) and set(self.wanted) <= set(self.found)


async def delegation(zone: str, wanted: Sequence[str], resolver_spec: str,
                     timeout: float) -> Delegation:  # noqa: ASYNC109
    """The one delegation check (check-ns and the engine's DNS step): the NS records of
    *zone* through *resolver_spec* (``dns.ns_resolver``: "" = the system resolver, the
    public view) compared with *wanted*. An answer that cannot be had is "nothing found"
    (not verified), never an error: the caller waits and asks again."""
    res = make_resolver(resolver_spec, timeout)
    try:
        ans = await res.resolve(zone, "NS")
        found = sorted({fqdn(str(r.target)) for r in ans})
    except (TimeoutError, dns.exception.DNSException):
        found = []
    return Delegation(tuple(sorted({fqdn(n) for n in wanted})), tuple(found))

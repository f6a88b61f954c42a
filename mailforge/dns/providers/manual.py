"""The ``manual`` provider: publishes nothing. The records to create are shown by the
API (dns-status) and the CLI (``mailforge dns plan``); verification still runs, against
the zone's delegated nameservers."""

from __future__ import annotations

from collections.abc import Sequence

from ...config import Config
from ..plan import RRsetChange
from ..records import Record
from .base import resolve_ns_servers


class ManualProvider:
    name = "manual"
    publishes = False

    def __init__(self, cfg: Config, credentials: str | None = None) -> None:
        self.cfg = cfg

    async def ensure_zone(self, zone: str) -> list[str]:
        return []

    async def list_records(self, zone: str) -> list[Record]:
        return []

    async def apply(self, zone: str, changes: Sequence[RRsetChange]) -> None:
        return None

    async def authoritative_servers(self, zone: str) -> list[tuple[str, int]]:
        return await resolve_ns_servers(zone, self.cfg.dns.ns_resolver,
                                        self.cfg.dns.query_timeout)

"""The ``powerdns`` provider: the PowerDNS Authoritative HTTP API. PowerDNS hosts the
zones: a missing zone is created (Native, with the configured nameservers, its
``account`` set to ``ZONE_ACCOUNT``), and its DNS port is where verification asks.

A zone that exists without that marker is not mailforge's (the operator's own zone on
the same server, say): it is never adopted (``ZoneExists``), so a tenant connecting its
name gets 409, not the operator's records; nor is a new zone carved out of such a zone
(a zone for ``mail.<operator zone>`` would answer for the operator's names below it).
Which domain a marked zone serves needs no record here: the store lets one live domain
hold a name (and no name at, under or above another account's)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from ...config import Config
from ...errors import TemporaryError
from ..plan import RRsetChange
from ..records import Record, fqdn, record
from .base import ZoneExists, http_error

# The PowerDNS zone ``account`` of the zones mailforge creates.
ZONE_ACCOUNT = "mailforge"


class PowerDnsProvider:
    name = "powerdns"
    publishes = True

    def __init__(self, cfg: Config, credentials: str | None = None) -> None:
        self.cfg = cfg
        self.pc = cfg.dns.powerdns
        self.base = f"{self.pc.api_url.rstrip('/')}/api/v1/servers/{quote(self.pc.server_id)}"

    async def _call(self, method: str, path: str, body: Any = None,
                    ok: tuple[int, ...] = (200, 201, 204)) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.cfg.dns.http_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.request(
                    method, self.base + path, json=body,
                    headers={"X-API-Key": self.pc.api_key}) as resp:
                text = await resp.text()
                data: Any = None
                if text.strip():
                    try:
                        data = json.loads(text)
                    except ValueError:
                        data = text
                if resp.status in ok or (resp.status == 404 and 404 in ok):
                    return resp.status, data
                msg = data.get("error", "") if isinstance(data, dict) else str(data)[:200]
                raise http_error("powerdns", resp.status, msg,
                                 resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise TemporaryError(f"powerdns: {type(exc).__name__}: {exc}") from None

    async def ensure_zone(self, zone: str) -> list[str]:
        z = fqdn(zone)
        status, data = await self._call("GET", f"/zones/{quote(z)}?rrsets=false",
                                        ok=(200, 404))
        if status == 404:
            await self._refuse_carving(z)
            status, data = await self._call("POST", "/zones", {
                "name": z, "kind": "Native", "account": ZONE_ACCOUNT,
                "nameservers": [fqdn(n) for n in self.pc.nameservers]}, ok=(201, 409))
            if status == 409:  # created meanwhile: by us (a concurrent call) or not?
                status, data = await self._call("GET", f"/zones/{quote(z)}?rrsets=false")
        account = data.get("account") if isinstance(data, dict) else None
        if account != ZONE_ACCOUNT:
            raise ZoneExists(f"powerdns: zone {z} already exists and was not created by "
                             "mailforge; it is not taken over (zone_exists)")
        return [fqdn(n) for n in self.pc.nameservers]

    async def _refuse_carving(self, z: str) -> None:
        """A new zone under a zone that is not mailforge's would take over the names
        below it from that zone (PowerDNS answers from the most specific zone): a
        tenant connecting ``mail.<operator zone>`` must not replace the operator's
        ``mail`` records. Under a zone of mailforge's it is the same account's sub-domain
        (the store refuses names under another account's)."""
        labels = z.rstrip(".").split(".")
        for k in range(1, len(labels)):
            parent = ".".join(labels[k:]) + "."
            status, data = await self._call("GET", f"/zones/{quote(parent)}?rrsets=false",
                                            ok=(200, 404))
            if status == 200 and (not isinstance(data, dict)
                                  or data.get("account") != ZONE_ACCOUNT):
                raise ZoneExists(f"powerdns: zone {z} would take names out of zone {parent}, "
                                 "which mailforge did not create; it is not created "
                                 "(zone_exists)")

    async def list_records(self, zone: str) -> list[Record]:
        _, data = await self._call("GET", f"/zones/{quote(fqdn(zone))}")
        out: list[Record] = []
        for rrset in data.get("rrsets", []):
            for r in rrset.get("records", []):
                if r.get("disabled"):
                    continue
                try:
                    out.append(record(rrset["name"], rrset["type"], r["content"],
                                      int(rrset.get("ttl", 300))))
                except Exception:  # noqa: S112 - a type we cannot parse is not ours
                    continue
        return out

    async def apply(self, zone: str, changes: Sequence[RRsetChange]) -> None:
        if not changes:
            return
        rrsets = []
        for ch in changes:
            if ch.after:
                rrsets.append({"name": ch.name, "type": ch.rtype, "ttl": ch.ttl,
                               "changetype": "REPLACE",
                               "records": [{"content": c, "disabled": False}
                                           for c in ch.after]})
            else:
                rrsets.append({"name": ch.name, "type": ch.rtype, "changetype": "DELETE"})
        await self._call("PATCH", f"/zones/{quote(fqdn(zone))}", {"rrsets": rrsets})

    async def authoritative_servers(self, zone: str) -> list[tuple[str, int]]:
        return [(self.pc.dns_server, self.pc.dns_port)]

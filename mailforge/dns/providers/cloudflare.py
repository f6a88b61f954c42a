"""The ``cloudflare`` provider: the Cloudflare API v4 (bearer token, the ``{success,
errors, result, result_info}`` envelope, pagination, 429 with Retry-After). The zone
must exist in the token's account; its ``name_servers`` are what connect answers.

Cloudflare has one record per value (no rrsets): changes become one POST per new value
and one DELETE per removed value, by record id. "Already exists" on create and "does
not exist" on delete are successes (a retried apply is idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from ...config import Config
from ...errors import PermanentError, TemporaryError
from ..plan import RRsetChange
from ..records import Record, fqdn, record
from .base import http_error, resolve_ns_servers

ALREADY_EXISTS = {81057, 81058}
DOES_NOT_EXIST = {81044}
PER_PAGE = 100


def _bare(name: str) -> str:
    return name.rstrip(".").lower()


def to_cloudflare(r: Record) -> dict[str, Any]:
    """A mailforge record as a Cloudflare record body."""
    body: dict[str, Any] = {"type": r.rtype, "name": _bare(r.name), "ttl": r.ttl,
                            "comment": "managed by mailforge"}
    parts = r.content.split()
    if r.rtype == "MX":
        body.update(priority=int(parts[0]), content=_bare(parts[1]))
    elif r.rtype == "SRV":
        body["data"] = {"priority": int(parts[0]), "weight": int(parts[1]),
                        "port": int(parts[2]), "target": _bare(parts[3])}
    elif r.rtype == "CNAME":
        body["content"] = _bare(r.content)
    else:
        body["content"] = r.content  # TXT stays as quoted <=255-byte strings
    return body


def from_cloudflare(item: dict[str, Any]) -> Record:
    rtype = str(item["type"]).upper()
    content = str(item.get("content", ""))
    if rtype == "MX":
        content = f"{item.get('priority', 0)} {content}."
    elif rtype == "SRV":
        d = item.get("data") or {}
        if d:
            content = f"{d['priority']} {d['weight']} {d['port']} {d['target']}."
        else:
            content = f"{item.get('priority', 0)} {content}."
    elif rtype == "CNAME":
        content = f"{content}."
    elif rtype == "TXT" and not content.startswith('"'):
        # Unquoted content from the dashboard: one value, quote it for parsing.
        content = json.dumps(content)
    ttl = int(item.get("ttl", 300))
    return record(item["name"], rtype, content, 300 if ttl == 1 else ttl)


class CloudflareProvider:
    name = "cloudflare"
    publishes = True

    def __init__(self, cfg: Config, credentials: str | None = None) -> None:
        self.cfg = cfg
        self.cc = cfg.dns.cloudflare
        self.token = credentials or self.cc.api_token
        self.base = self.cc.api_url.rstrip("/")
        self._zone_ids: dict[str, str] = {}

    async def _call(self, method: str, path: str, body: Any = None,
                    params: dict[str, Any] | None = None,
                    tolerate: set[int] | None = None) -> dict[str, Any]:
        if not self.token:
            raise PermanentError("cloudflare: no API token (connect with "
                                 "cloudflare_api_token, or dns.cloudflare.api_token)")
        timeout = aiohttp.ClientTimeout(total=self.cfg.dns.http_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.request(
                    method, self.base + path, json=body, params=params,
                    headers={"Authorization": f"Bearer {self.token}"}) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text) if text else {}
                except ValueError:
                    data = {}
                if not isinstance(data, dict):
                    data = {}
                errors = data.get("errors") or []
                codes = {e.get("code") for e in errors if isinstance(e, dict)}
                if resp.status < 300 and data.get("success", False):
                    return data
                if tolerate and codes & tolerate:
                    return data
                msg = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors
                                if isinstance(e, dict)) or text[:200]
                raise http_error("cloudflare", resp.status, msg,
                                 resp.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TemporaryError(f"cloudflare: {type(exc).__name__}: {exc}") from None

    async def _zone(self, zone: str) -> dict[str, Any]:
        data = await self._call("GET", "/zones", params={"name": _bare(zone)})
        for z in data.get("result") or []:
            if _bare(z.get("name", "")) == _bare(zone):
                self._zone_ids[_bare(zone)] = z["id"]
                return dict(z)
        raise PermanentError(f"cloudflare: zone {_bare(zone)} is not in the token's account")

    async def _zone_id(self, zone: str) -> str:
        if _bare(zone) not in self._zone_ids:
            await self._zone(zone)
        return self._zone_ids[_bare(zone)]

    async def ensure_zone(self, zone: str) -> list[str]:
        z = await self._zone(zone)
        return [fqdn(n) for n in z.get("name_servers") or self.cc.nameservers]

    async def _items(self, zone: str) -> list[dict[str, Any]]:
        zid = await self._zone_id(zone)
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data = await self._call("GET", f"/zones/{zid}/dns_records",
                                    params={"page": page, "per_page": PER_PAGE})
            items = data.get("result") or []
            out += items
            info = data.get("result_info") or {}
            if info.get("count", len(items)) < PER_PAGE or not items:
                return out
            page += 1

    async def list_records(self, zone: str) -> list[Record]:
        out = []
        for item in await self._items(zone):
            try:
                out.append(from_cloudflare(item))
            except Exception:  # noqa: S112 - a record we cannot parse is not ours
                continue
        return out

    async def apply(self, zone: str, changes: Sequence[RRsetChange]) -> None:
        if not changes:
            return
        zid = await self._zone_id(zone)
        gone = {(c.name, c.rtype, v) for c in changes for v in set(c.before) - set(c.after)}
        if gone:
            for item in await self._items(zone):
                try:
                    r = from_cloudflare(item)
                except Exception:  # noqa: S112
                    continue
                if r.key in gone:
                    await self._call("DELETE", f"/zones/{zid}/dns_records/{item['id']}",
                                     tolerate=DOES_NOT_EXIST)
        for c in changes:
            for v in sorted(set(c.after) - set(c.before)):
                await self._call("POST", f"/zones/{zid}/dns_records",
                                 to_cloudflare(Record(c.name, c.rtype, v, c.ttl)),
                                 tolerate=ALREADY_EXISTS)

    async def authoritative_servers(self, zone: str) -> list[tuple[str, int]]:
        if self.cc.verify_server:
            host, _, port = self.cc.verify_server.rpartition(":")
            return [(host, int(port))]
        return await resolve_ns_servers(zone, self.cfg.dns.ns_resolver,
                                        self.cfg.dns.query_timeout)



"""Helpers for the DNS/DKIM real-stack tests: querying the sandbox's PowerDNS, waiting
for domains, reading the outbound sink."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.resolver
import yaml
from support import wait_job


def resolver(host: str, port: int) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host]
    r.port = port
    r.lifetime = 2.0
    return r


def txts(res: dns.resolver.Resolver, name: str) -> list[str]:
    try:
        return [b"".join(rd.strings).decode() for rd in res.resolve(name, "TXT")]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []


def dkim_dnsfunc(res: dns.resolver.Resolver) -> Any:
    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        n = name.decode() if isinstance(name, bytes) else name
        found = txts(res, n.rstrip("."))
        return found[0].encode() if found else None
    return lookup


async def setup_active(api: Any, name: str, timeout: float = 30.0,
                       **connect: Any) -> dict[str, Any]:
    """Connect and set up *name*; wait for the job and for ``active``."""
    status, body = await api.post("/v1/domains/connect", {"domains": [name], **connect})
    assert status == 201, body
    dom = body["domains"][0]
    status, setup = await api.post("/v1/domains/setup", {"domain": name})
    assert status == 202, setup
    job = await wait_job(api, setup["job_id"], timeout=timeout)
    status, got = await api.get(f"/v1/domains/{dom['id']}")
    assert job["status"] == "completed", (job, got)
    assert got["status"] == "active", got
    return {**dom, **got, "nameservers": dom["nameservers"]}


async def wait_sink(outbox: str, rcpt: str, timeout: float = 20.0) -> bytes:
    """The raw bytes of the first message relayed to *rcpt*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for meta in sorted(Path(outbox).glob("*.json")):
            info = json.loads(meta.read_text())
            if rcpt in info.get("rcpt_tos", []):
                return meta.with_suffix(".eml").read_bytes()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no message for {rcpt} in {outbox} after {timeout}s")


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


@contextlib.contextmanager
def daemon_overlay(sandbox: Any, overlay: dict[str, Any]) -> Iterator[None]:
    """Run the sandbox daemon with *overlay* merged into its config (e.g. a provider
    pointing at a test's own BIND), restoring the original config afterwards."""
    path = Path(sandbox.info["config_path"])
    original = path.read_text()
    path.write_text(yaml.safe_dump(_deep_merge(yaml.safe_load(original), overlay)))
    sandbox.stop_service("daemon")
    sandbox.start_service("daemon")
    try:
        yield
    finally:
        path.write_text(original)
        sandbox.stop_service("daemon")
        sandbox.start_service("daemon")


async def pdns(sandbox: Any, method: str, path: str, body: Any = None,
               ok: tuple[int, ...] = (200, 201, 204)) -> tuple[int, Any]:
    """Call the sandbox PowerDNS API directly (as the operator, or the outside world)."""
    i = sandbox.info["pdns_api"]
    async with aiohttp.ClientSession(headers={"X-API-Key": i["key"]}) as s, s.request(
            method, f"{i['url']}/api/v1/servers/localhost{path}", json=body) as r:
        text = await r.text()
        assert r.status in ok, (r.status, text)
        try:
            return r.status, (json.loads(text) if text.strip() else None)
        except ValueError:
            return r.status, text  # PowerDNS answers some errors in plain text


async def delegate(sandbox: Any, name: str, nameservers: list[str]) -> None:
    """Make the public view (the sandbox resolver, its PowerDNS) show *name* delegated
    to *nameservers*: what a registrar's delegation does for a real domain. For a zone
    hosted elsewhere (BIND, the Cloudflare fake): PowerDNS answers its NS records."""
    await pdns(sandbox, "POST", "/zones", {"name": name.rstrip(".") + ".", "kind": "Native",
                                           "nameservers": nameservers})

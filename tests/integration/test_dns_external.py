"""Issue 3 through the daemon with providers outside the sandbox: RFC 2136 to a real
BIND9 with TSIG (and a wrong key reported as a permanent error on the job), and the
Cloudflare fake answering 429 / 5xx / too slowly before the domain converges."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from bindhelp import Bind, start_named
from cloudflare_fake import CloudflareFake
from dnshelp import daemon_overlay, delegate, resolver, setup_active, txts
from support import wait_job

pytestmark = pytest.mark.stack

ZONES = [f"r{secrets.token_hex(5)}.test" for _ in range(3)]
CF_TOKEN = "cf-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def named() -> Iterator[Bind]:
    base = Path(tempfile.mkdtemp(prefix="mailforge-named-", dir="/tmp"))
    b = start_named(base, ZONES, ["mf-key"])
    yield b
    b.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cloudflare() -> AsyncIterator[CloudflareFake]:
    fake = CloudflareFake(CF_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def api(daemon: Any) -> AsyncIterator[Any]:
    """An API client of its own: the session client's pooled connections point at the
    daemon this module restarted."""
    from conftest import ApiClient

    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield ApiClient(s, daemon.info["api_url"], daemon.info["admin_token"])


@pytest.fixture(scope="module")
def daemon(sandbox: Any, named: Bind, cloudflare: CloudflareFake) -> Iterator[Any]:
    overlay = {
        "worker": {"retry_base_seconds": 0.2, "retry_max_seconds": 1.0},
        "dns": {"http_timeout": 1.0, "rfc2136": {
            "server": "127.0.0.1", "port": named.port, "tsig_key_name": "mf-key",
            "tsig_secret": named.keys["mf-key"], "nameservers": ["ns1.sandbox.test."]},
            "cloudflare": {"api_url": cloudflare.url,
                           "verify_server": f"127.0.0.1:{cloudflare.dns_port}"}}}
    with daemon_overlay(sandbox, overlay):
        yield sandbox


def _show_named_log(named: Bind) -> str:
    return f"named log:\n{named.log_tail()}"


async def test_setup_through_rfc2136_on_bind_with_tsig(daemon: Any, api: Any,
                                                       named: Bind) -> None:
    zone = ZONES[0]
    try:
        # The name is proven by its public delegation (here: the sandbox's PowerDNS).
        await delegate(daemon, zone, ["ns1.sandbox.test."])
        dom = await setup_active(api, zone, dns_provider="rfc2136")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_show_named_log(named)}") from None
    assert dom["nameservers"] == ["ns1.sandbox.test."]
    res = resolver("127.0.0.1", named.port)
    assert [str(r.exchange) for r in res.resolve(zone, "MX")] == \
        [daemon.info["mx_hostname"] + "."]
    status, report = await api.get(f"/v1/domains/{dom['id']}/dns-status")
    assert status == 200 and report["verified"] is True, report
    dkim = [r for r in report["records"] if r["purpose"].startswith("dkim:")]
    assert len(dkim) == 2
    for r in dkim:
        (value,) = txts(res, r["name"])
        assert value.startswith("v=DKIM1; k=")


async def test_wrong_tsig_key_is_a_clear_permanent_error_on_the_job(
        daemon: Any, api: Any, named: Bind) -> None:
    # BIND now knows another secret under the daemon's key name.
    named.stop()
    wrong = {"mf-key": base64.b64encode(secrets.token_bytes(32)).decode()}
    restarted = start_named(named.dir, ZONES, ["mf-key"], port=named.port, keys=wrong)
    try:
        zone = ZONES[1]
        status, body = await api.post("/v1/domains/connect",
                                      {"domains": [zone], "dns_provider": "rfc2136"})
        assert status == 201, body
        status, setup = await api.post("/v1/domains/setup", {"domain": zone})
        job = await wait_job(api, setup["job_id"], timeout=20)
        assert job["status"] == "failed", job
        (failure,) = job["failures"]
        assert "TSIG" in failure["error"] and "mf-key" in failure["error"], failure
        assert named.keys["mf-key"] not in failure["error"]
        _, dom = await api.get(f"/v1/domains/{body['domains'][0]['id']}")
        assert dom["status"] == "failed" and "TSIG" in dom["last_error"]
    finally:
        restarted.stop()
        named.proc = start_named(named.dir, ZONES, ["mf-key"], port=named.port,
                                 keys=named.keys).proc


async def test_cloudflare_429_5xx_and_timeouts_are_retried_until_converged(
        daemon: Any, api: Any, cloudflare: CloudflareFake, unique_domain: str) -> None:
    cloudflare.add_zone(unique_domain)
    await delegate(daemon, unique_domain, ["ada.ns.cloudflare.com.", "bob.ns.cloudflare.com."])
    cloudflare.add_record(unique_domain, type="A", name=f"www.{unique_domain}",
                          content="192.0.2.44")
    cloudflare.faults.extend(["429", "503", "slow", "500", "429"])
    status, body = await api.post("/v1/domains/connect", {
        "domains": [unique_domain], "dns_provider": "cloudflare",
        "cloudflare_api_token": CF_TOKEN})
    assert status == 201, body
    dom_id = body["domains"][0]["id"]
    status, setup = await api.post("/v1/domains/setup", {"domain": unique_domain})
    assert status == 202
    seen_errors: set[str] = set()
    seen_processing = False
    deadline = time.monotonic() + 40
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, job = await api.get(f"/v1/jobs/{setup['job_id']}")
        _, dom = await api.get(f"/v1/domains/{dom_id}")
        if dom["last_error"]:
            seen_errors.add(dom["last_error"])
        seen_processing |= job["status"] in ("pending", "processing")
        if job["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "completed", (job, seen_errors)
    assert seen_processing
    assert not cloudflare.faults and len(cloudflare.fault_hits) >= 5
    assert any("429" in e for e in seen_errors), seen_errors
    _, dom = await api.get(f"/v1/domains/{dom_id}")
    assert dom["status"] == "active"
    names = {(r["type"], r["name"]) for r in cloudflare.records[
        cloudflare.zone_id(unique_domain)]}
    assert ("A", f"www.{unique_domain}") in names and ("MX", unique_domain) in names

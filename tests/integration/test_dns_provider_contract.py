"""ONE contract suite for every DNS provider plugin (certbot's style: a base class of
tests, one subclass per provider supplying the environment). Each runs against the
real thing where it can: PowerDNS (sandbox), BIND9 over RFC 2136 with TSIG, PowerDNS
over RFC 2136 with TSIG, the Cloudflare fake (local, follows provider-contracts.md),
and ``manual`` (publishes nothing)."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from bindhelp import Bind, start_named
from cloudflare_fake import CloudflareFake

from mailforge.config import (
    CloudflareConfig,
    Config,
    DnsConfig,
    Endpoint,
    HostConfig,
    PowerDnsConfig,
    Rfc2136Config,
)
from mailforge.dkim.keys import generate
from mailforge.dns.plan import RRsetChange, plan
from mailforge.dns.providers.base import DnsProvider, load_provider
from mailforge.dns.records import DkimKeyInfo, Record, desired_records, record
from mailforge.dns.verify import verify

pytestmark = pytest.mark.stack

KEYS = [DkimKeyInfo("mf20260101a-rsa", "rsa", generate("rsa", "x").public_key, "active"),
        DkimKeyInfo("mf20260101a-ed25519", "ed25519", generate("ed25519", "x").public_key,
                    "active")]


def base_config(**dns: Any) -> Config:
    return Config(host=HostConfig(mx_hostname="mail.sandbox.test",
                                  imap=Endpoint(port=993), submission=Endpoint(port=587)),
                  dns=DnsConfig(mx_hostname="mail.sandbox.test", query_timeout=1.0,
                                http_timeout=1.5, **dns))


@dataclass
class Env:
    provider: DnsProvider
    zone: str
    cfg: Config


async def add_foreign(p: DnsProvider, zone: str, records: list[Record]) -> None:
    """The operator's own records, written around mailforge (no ownership recorded)."""
    current = await p.list_records(zone)
    changes = []
    for name, rtype in sorted({(r.name, r.rtype) for r in records}):
        before = tuple(sorted(c.content for c in current if (c.name, c.rtype) == (name, rtype)))
        new = [r.content for r in records if (r.name, r.rtype) == (name, rtype)]
        changes.append(RRsetChange(name, rtype, 300, before, tuple(sorted({*before, *new}))))
    await p.apply(zone, changes)


class ProviderContract:
    """Every provider passes these. Subclasses define the ``env`` fixture."""

    publishes = True

    async def _publish(self, env: Env, owned: set[tuple[str, str, str]] | None = None
                       ) -> Any:
        want = [e.record for e in desired_records(env.zone, KEYS, env.cfg)]
        current = await env.provider.list_records(env.zone)
        p = plan(want, current, owned or set())
        await env.provider.apply(env.zone, p.rrsets)
        return p

    async def test_zone_names_its_nameservers(self, env: Env) -> None:
        ns = await env.provider.ensure_zone(env.zone)
        assert all(n.endswith(".") for n in ns)
        assert bool(ns) == self.publishes

    async def test_publish_lists_and_verifies_every_record(self, env: Env) -> None:
        p = await self._publish(env)
        assert p.creates and not p.deletes
        listed = {r.key for r in await env.provider.list_records(env.zone)}
        expected = desired_records(env.zone, KEYS, env.cfg)
        if not self.publishes:
            assert listed == set()
            return
        assert {r.key for r in p.creates} <= listed
        # The RSA DKIM value is longer than 255 bytes: it must round-trip split.
        assert any(len(e.record.content) > 300 for e in expected)
        servers = await env.provider.authoritative_servers(env.zone)
        checks = await verify(expected, servers, 1.0)
        assert [c.json() for c in checks if c.status != "ok"] == []

    async def test_second_plan_is_empty(self, env: Env) -> None:
        p1 = await self._publish(env)
        if not self.publishes:
            return
        p2 = plan([e.record for e in desired_records(env.zone, KEYS, env.cfg)],
                  await env.provider.list_records(env.zone), p1.owned_after)
        assert p2.empty, p2.lines()

    async def test_operator_records_survive_publish_and_delete(self, env: Env) -> None:
        if not self.publishes:
            return
        z = env.zone
        foreign = [record(f"www.{z}", "A", "192.0.2.10"),
                   record(z, "TXT", '"google-site-verification=abc123"'),
                   record(z, "TXT", '"v=spf1 include:_spf.example.net -all"')]
        await add_foreign(env.provider, z, foreign)
        p = await self._publish(env)
        assert any("SPF" in c for c in p.conflicts), p.conflicts
        listed = {r.key for r in await env.provider.list_records(z)}
        assert {f.key for f in foreign} <= listed
        spf = [k for k in listed if k[1] == "TXT" and "v=spf1" in k[2]]
        assert len(spf) == 1  # ours was not added next to the operator's
        # Deleting the domain removes what we own and nothing else.
        gone = plan([], await env.provider.list_records(z), p.owned_after, deleting=True)
        await env.provider.apply(z, gone.rrsets)
        after = {r.key for r in await env.provider.list_records(z)}
        assert {f.key for f in foreign} <= after
        assert not (p.owned_after & after)


# ---------------------------------------------------------------------- PowerDNS


class TestPowerDnsContract(ProviderContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def env(self, sandbox: Any) -> AsyncIterator[Env]:
        i = sandbox.info
        cfg = base_config(powerdns=PowerDnsConfig(
            api_url=i["pdns_api"]["url"], api_key=i["pdns_api"]["key"],
            nameservers=("ns1.sandbox.test.",), dns_server="127.0.0.1",
            dns_port=i["dns"]["port"]))
        p = load_provider("powerdns", cfg)
        zone = f"c{secrets.token_hex(5)}.test"
        await p.ensure_zone(zone)
        yield Env(p, zone, cfg)


# ---------------------------------------------------------------------- RFC 2136

BIND_ZONES = [f"b{secrets.token_hex(5)}.test" for _ in range(8)]


@pytest.fixture(scope="module")
def named() -> Any:
    # Not under pytest's tmp_path: its 0700 parents keep the bind user out.
    base = Path(tempfile.mkdtemp(prefix="mailforge-named-", dir="/tmp"))
    b = start_named(base, BIND_ZONES, ["mf-key"])
    yield b
    b.stop()
    shutil.rmtree(base, ignore_errors=True)




class TestRfc2136BindContract(ProviderContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def env(self, named: Bind, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
        cfg = base_config(rfc2136=Rfc2136Config(
            server="127.0.0.1", port=named.port, tsig_key_name="mf-key",
            tsig_secret=named.keys["mf-key"], nameservers=("ns1.sandbox.test.",)))
        zone = named.zones.pop()
        yield Env(load_provider("rfc2136", cfg), zone, cfg)
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(named.log_tail())


class TestRfc2136PowerDnsContract(ProviderContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def env(self, sandbox: Any) -> AsyncIterator[Env]:
        i = sandbox.info
        zone = f"u{secrets.token_hex(5)}.test"
        keyname = f"mf-{zone.split('.')[0]}"
        secret = __import__("base64").b64encode(secrets.token_bytes(32)).decode()
        api = f"{i['pdns_api']['url']}/api/v1/servers/localhost"
        hdr = {"X-API-Key": i["pdns_api"]["key"]}
        async with aiohttp.ClientSession(headers=hdr) as s:
            for method, path, body in [
                ("POST", "/zones", {"name": zone + ".", "kind": "Native",
                                    "nameservers": ["ns1.sandbox.test."]}),
                ("POST", "/tsigkeys", {"name": keyname, "algorithm": "hmac-sha256",
                                       "key": secret}),
                ("PUT", f"/zones/{zone}./metadata/TSIG-ALLOW-DNSUPDATE",
                 {"metadata": [keyname]}),
            ]:
                async with s.request(method, api + path, json=body) as r:
                    assert r.status < 300, (path, r.status, await r.text())
        # The API refuses TSIG-ALLOW-AXFR; pdnsutil sets it (signed read-back of the zone).
        subprocess.run(["pdnsutil", f"--config-dir={Path(i['dir']) / 'pdns'}", "set-meta",
                        zone, "TSIG-ALLOW-AXFR", keyname], check=True, capture_output=True)
        cfg = base_config(rfc2136=Rfc2136Config(
            server="127.0.0.1", port=i["dns"]["port"], tsig_key_name=keyname,
            tsig_secret=secret, nameservers=("ns1.sandbox.test.",)))
        yield Env(load_provider("rfc2136", cfg), zone, cfg)


# ---------------------------------------------------------------------- Cloudflare

CF_TOKEN = "cf-test-" + secrets.token_hex(8)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cloudflare() -> AsyncIterator[CloudflareFake]:
    fake = CloudflareFake(CF_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


def cf_config(fake: CloudflareFake) -> Config:
    return base_config(cloudflare=CloudflareConfig(
        api_url=fake.url, api_token=CF_TOKEN, verify_server=f"127.0.0.1:{fake.dns_port}"))


class TestCloudflareContract(ProviderContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def env(self, cloudflare: CloudflareFake) -> AsyncIterator[Env]:
        zone = f"f{secrets.token_hex(5)}.test"
        cloudflare.add_zone(zone)
        cfg = cf_config(cloudflare)
        yield Env(load_provider("cloudflare", cfg), zone, cfg)


# ---------------------------------------------------------------------- manual


class TestManualContract(ProviderContract):
    publishes = False

    @pytest_asyncio.fixture(loop_scope="session")
    async def env(self) -> AsyncIterator[Env]:
        cfg = base_config()
        yield Env(load_provider("manual", cfg), f"m{secrets.token_hex(5)}.test", cfg)


# ---------------------------------------------------------------------- provider faults


async def test_cloudflare_pagination_and_faults_map_to_retry_decisions(
        cloudflare: CloudflareFake) -> None:
    from mailforge.errors import PermanentError, TemporaryError

    zone = f"p{secrets.token_hex(5)}.test"
    cloudflare.add_zone(zone)
    for n in range(230):  # more than two pages of 100
        cloudflare.add_record(zone, type="A", name=f"h{n}.{zone}", content="192.0.2.1")
    cfg = cf_config(cloudflare)
    p = load_provider("cloudflare", cfg)
    assert len(await p.list_records(zone)) == 230
    cloudflare.faults.append("429")
    with pytest.raises(TemporaryError) as e429:
        await p.list_records(zone)
    assert e429.value.delay == 1.0
    cloudflare.faults.append("503")
    with pytest.raises(TemporaryError):
        await p.list_records(zone)
    cloudflare.faults.append("slow")
    with pytest.raises(TemporaryError):
        await p.list_records(zone)
    bad = load_provider("cloudflare", dataclasses.replace(
        cfg, dns=dataclasses.replace(cfg.dns, cloudflare=dataclasses.replace(
            cfg.dns.cloudflare, api_token="wrong"))))
    with pytest.raises(PermanentError, match="credentials refused"):
        await bad.list_records(zone)


async def test_rfc2136_wrong_tsig_key_is_a_permanent_error(named: Bind) -> None:
    from mailforge.errors import PermanentError

    zone = named.zones.pop()
    cfg = base_config(rfc2136=Rfc2136Config(
        server="127.0.0.1", port=named.port, tsig_key_name="mf-key",
        tsig_secret=__import__("base64").b64encode(b"x" * 32).decode()))
    p = load_provider("rfc2136", cfg)
    want = [e.record for e in desired_records(zone, KEYS, cfg)]
    with pytest.raises(PermanentError, match="TSIG") as exc:
        await p.apply(zone, plan(want, [], set()).rrsets)
    assert named.keys["mf-key"] not in str(exc.value)



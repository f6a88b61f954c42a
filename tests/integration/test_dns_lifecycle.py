"""Issue 3 lifecycle on the real stack (PowerDNS): DKIM rotation, a zone pre-filled
with the operator's records kept through setup, rotation and deletion, and the
served MTA-STS policy / autoconfig XML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dnshelp import resolver, setup_active, txts, wait_sink
from support import wait_job
from test_dns_powerdns import _mailbox, _signatures, _submit

pytestmark = pytest.mark.stack


def _dkim_selectors(report: dict[str, Any]) -> set[str]:
    return {r["name"].split(".")[0] for r in report["records"]
            if r["purpose"].startswith("dkim:")}


async def test_rotation_publishes_and_verifies_before_signing_and_keeps_old_record(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    info = sandbox.info
    res = resolver(info["dns"]["host"], info["dns"]["port"])
    dom = await setup_active(api, unique_domain)
    _, before = await api.get(f"/v1/domains/{dom['id']}/dns-status")
    old = _dkim_selectors(before)
    assert len(old) == 2

    status, job = await api.post(f"/v1/domains/{dom['id']}/dkim/rotate")
    assert status == 202, job
    assert (await wait_job(api, job["job_id"], timeout=30))["status"] == "completed"
    _, after = await api.get(f"/v1/domains/{dom['id']}/dns-status")
    assert after["verified"] is True, after
    new = _dkim_selectors(after) - old
    assert len(new) == 2, after
    # The old keys retire: no longer signing, still published with their key.
    for sel in old:
        (value,) = txts(res, f"{sel}._domainkey.{unique_domain}")
        assert "p=" in value and not value.endswith("p="), value
    table = (Path(info["state_dir"]) / "dkim" / "SigningTable").read_text()
    assert f"*@{unique_domain}" in table
    keytables = "".join((Path(info["state_dir"]) / "dkim" / t).read_text()
                        for t in ("KeyTable", "KeyTableEd25519"))
    assert all(f"{unique_domain}:{s}:" in keytables for s in new)
    assert not any(f"{unique_domain}:{s}:" in keytables for s in old)

    user = await _mailbox(api, unique_domain)
    rcpt = f"rot-{unique_domain}@outside.test"
    _submit(info, user, rcpt, "after rotation")
    sigs = _signatures(await wait_sink(info["outbox_dir"], rcpt), res)
    assert {s for s, _ in sigs.values()} == new
    assert all(ok for _, ok in sigs.values()), sigs


async def _pdns(sandbox: Any, method: str, path: str, body: Any = None) -> Any:
    i = sandbox.info["pdns_api"]
    async with aiohttp.ClientSession(headers={"X-API-Key": i["key"]}) as s, s.request(
            method, f"{i['url']}/api/v1/servers/localhost{path}", json=body) as r:
        assert r.status < 300, await r.text()
        return await r.json(content_type=None) if r.status != 204 else None


async def test_operator_records_survive_setup_rotation_and_delete(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    z = unique_domain + "."
    spf = '"v=spf1 include:_spf.operator.example ~all"'
    await _pdns(sandbox, "POST", "/zones", {"name": z, "kind": "Native",
                                           "nameservers": ["ns1.sandbox.test."]})
    await _pdns(sandbox, "PATCH", f"/zones/{z}", {"rrsets": [
        {"name": f"www.{z}", "type": "A", "ttl": 300, "changetype": "REPLACE",
         "records": [{"content": "192.0.2.80", "disabled": False}]},
        {"name": z, "type": "TXT", "ttl": 300, "changetype": "REPLACE",
         "records": [{"content": '"operator-verification=42"', "disabled": False},
                     {"content": spf, "disabled": False}]}]})

    def operator_records(zone: dict[str, Any]) -> set[tuple[str, str, str]]:
        return {(rr["name"], rr["type"], r["content"]) for rr in zone["rrsets"]
                for r in rr["records"]}

    foreign = {(f"www.{z}", "A", "192.0.2.80"), (z, "TXT", '"operator-verification=42"'),
               (z, "TXT", spf)}
    dom = await setup_active(api, unique_domain)
    assert foreign <= operator_records(await _pdns(sandbox, "GET", f"/zones/{z}"))
    _, report = await api.get(f"/v1/domains/{dom['id']}/dns-status")
    assert any("SPF" in c for c in report["conflicts"]), report
    (spf_check,) = [r for r in report["records"] if r["purpose"] == "spf"]
    assert spf_check["status"] == "mismatch" and spf_check.get("conflict") is True
    assert spf in spf_check["found"]  # reported with what is there, not overwritten

    status, job = await api.post(f"/v1/domains/{dom['id']}/dkim/rotate")
    assert status == 202
    assert (await wait_job(api, job["job_id"], timeout=30))["status"] == "completed"
    assert foreign <= operator_records(await _pdns(sandbox, "GET", f"/zones/{z}"))

    status, job = await api.delete(f"/v1/domains/{dom['id']}")
    assert status == 202, job
    assert (await wait_job(api, job["job_id"], timeout=30))["status"] == "completed"
    left = operator_records(await _pdns(sandbox, "GET", f"/zones/{z}"))
    assert foreign <= left
    assert {t for _, t, _ in left} <= {"SOA", "NS", "A", "TXT"}
    assert not any("DKIM1" in c or "DMARC1" in c for _, _, c in left), left
    status, _ = await api.get(f"/v1/domains/{dom['id']}")
    assert status == 404
    table = (Path(sandbox.info["state_dir"]) / "dkim" / "SigningTable").read_text()
    assert unique_domain not in table


async def test_mta_sts_policy_and_autoconfig_are_served(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    await setup_active(api, unique_domain)
    base = sandbox.info["api_url"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/.well-known/mta-sts.txt",
                         headers={"Host": f"mta-sts.{unique_domain}"}) as r:
            assert r.status == 200
            policy = await r.text()
        async with s.get(f"{base}/mail/config-v1.1.xml",
                         headers={"Host": f"autoconfig.{unique_domain}"}) as r:
            assert r.status == 200
            xml = await r.text()
        async with s.get(f"{base}/.well-known/mta-sts.txt",
                         headers={"Host": "mta-sts.not-ours.test"}) as r:
            assert r.status == 404
    assert policy.startswith("version: STSv1\n") and "mx: " in policy
    assert f"<domain>{unique_domain}</domain>" in xml
    res = resolver(sandbox.info["dns"]["host"], sandbox.info["dns"]["port"])
    (sts,) = txts(res, f"_mta-sts.{unique_domain}")
    assert sts.startswith("v=STSv1; id=")

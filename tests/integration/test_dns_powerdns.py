"""Issue 3 against the real stack with PowerDNS: setup publishes every record, the
domain becomes active only once they verify, and mail relayed through Postfix carries
RSA and Ed25519 DKIM signatures that dkimpy verifies against PowerDNS."""

from __future__ import annotations

import smtplib
from typing import Any

import dkim
import pytest
from dnshelp import dkim_dnsfunc, resolver, setup_active, txts, wait_sink
from support import message, wait_job

pytestmark = pytest.mark.stack


async def _mailbox(api: Any, domain: str, user: str = "alice") -> dict[str, Any]:
    status, body = await api.post("/v1/email-users", {"domain": domain, "username": user,
                                                      "name": "Alice"})
    assert status == 202, body
    assert (await wait_job(api, body["job_id"]))["status"] == "completed"
    return dict(body)


def _submit(info: dict[str, Any], user: dict[str, Any], rcpt: str, subject: str) -> None:
    sub = info["submission"]
    with smtplib.SMTP(sub["host"], sub["port"], timeout=10) as s:
        s.ehlo("client.test")
        s.login(user["email"], user["password"])
        s.send_message(message(user["email"], rcpt, subject), from_addr=user["email"],
                       to_addrs=[rcpt])


def _signatures(raw: bytes, res: Any) -> dict[str, tuple[str, bool]]:
    """algorithm -> (selector, verified) for each DKIM-Signature of *raw*."""
    d = dkim.DKIM(raw)
    sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    out = {}
    for i, sig in enumerate(sigs):
        tags = dict(t.strip().split(b"=", 1) for t in sig.split(b";") if b"=" in t)
        alg = tags[b"a"].strip().decode()
        ok = dkim.DKIM(raw).verify(idx=i, dnsfunc=dkim_dnsfunc(res))
        out[alg] = (tags[b"s"].strip().decode(), bool(ok))
    return out


async def test_setup_publishes_records_and_mail_is_signed_rsa_and_ed25519(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    info = sandbox.info
    dom = await setup_active(api, unique_domain)
    assert dom["dns_provider"] == "powerdns"
    assert dom["nameservers"], dom
    res = resolver(info["dns"]["host"], info["dns"]["port"])
    mx = [str(r.exchange).rstrip(".") for r in res.resolve(unique_domain, "MX")]
    assert mx == [info["mx_hostname"]]
    assert [t for t in txts(res, unique_domain) if t.startswith("v=spf1")] == \
        ["v=spf1 mx ~all"]
    assert txts(res, f"_dmarc.{unique_domain}")[0].startswith("v=DMARC1; p=none")
    assert txts(res, f"_smtp._tls.{unique_domain}")[0].startswith("v=TLSRPTv1")
    assert res.resolve(f"_submission._tcp.{unique_domain}", "SRV")

    status, report = await api.get(f"/v1/domains/{dom['id']}/dns-status")
    assert status == 200 and report["verified"] is True, report
    kinds = {r["purpose"].split(":")[0] for r in report["records"]}
    assert {"mx", "spf", "dkim", "dmarc", "mta-sts", "tls-rpt"} <= kinds
    assert all(r["status"] == "ok" for r in report["records"]), report
    dkim_txt = [r for r in report["records"] if r["purpose"].startswith("dkim:")]
    assert len(dkim_txt) == 2  # one RSA, one Ed25519 selector

    user = await _mailbox(api, unique_domain)
    rcpt = f"bob-{unique_domain}@outside.test"
    _submit(info, user, rcpt, "signed twice")
    raw = await wait_sink(info["outbox_dir"], rcpt)
    sigs = _signatures(raw, res)
    assert set(sigs) == {"rsa-sha256", "ed25519-sha256"}, sigs
    assert all(ok for _, ok in sigs.values()), sigs
    published = {r["name"].split(".")[0] for r in dkim_txt}
    assert {s for s, _ in sigs.values()} == published


async def test_cli_dns_plan_shows_changes_without_applying(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    import subprocess
    import sys

    status, body = await api.post("/v1/domains/connect", {"domains": [unique_domain]})
    assert status == 201, body
    out = subprocess.run([sys.executable, "-m", "mailforge", "-c",
                          sandbox.info["config_path"], "dns", "plan", unique_domain],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"+ {unique_domain}. 300 MX 10 {sandbox.info['mx_hostname']}." in out.stdout
    assert "v=spf1 mx ~all" in out.stdout
    res = resolver(sandbox.info["dns"]["host"], sandbox.info["dns"]["port"])
    assert not [t for t in txts(res, unique_domain) if t.startswith("v=spf1")]  # not applied


async def test_check_ns_verifies_delegation_and_queues_setup(
        sandbox: Any, api: Any, unique_domain: str) -> None:

    status, body = await api.post("/v1/domains/connect", {"domains": [unique_domain]})
    assert status == 201
    nameservers = body["domains"][0]["nameservers"]
    assert nameservers == ["ns1.sandbox.test.", "ns2.sandbox.test."]
    status, check = await api.post("/v1/domains/check-ns", {"domain": unique_domain})
    assert status == 200, check
    assert check["verified"] is True and sorted(check["nameservers"]) == nameservers
    dom_id = body["domains"][0]["id"]

    async def active() -> bool:
        _, d = await api.get(f"/v1/domains/{dom_id}")
        return bool(d["status"] == "active")

    import asyncio
    import time

    deadline = time.monotonic() + 20
    while not await active():
        assert time.monotonic() < deadline, "check-ns did not lead to an active domain"
        await asyncio.sleep(0.05)
    # A domain not delegated anywhere is reported, with what to delegate to.
    status, body = await api.post("/v1/domains/connect",
                                  {"domains": [f"x{unique_domain}"], "dns_provider": "manual"})
    assert status == 201
    status, check = await api.post("/v1/domains/check-ns", {"domain": f"x{unique_domain}"})
    assert status == 200 and check["verified"] is False

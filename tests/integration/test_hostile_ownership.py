"""Issue 9, names proven before they receive mail, against the real stack as a hostile
tenant would try it:

- a name whose public delegation (the sandbox resolver, its PowerDNS, plays the public
  DNS) does not point at the provider: after setup it stays ``provisioning``, is in no
  Postfix map and no DKIM SigningTable, has no login, and mail another tenant sends to
  it leaves for the outside (the sink) instead of landing in the claimant's mailbox;
  once the delegation is visible, check-ns proves it and mail is delivered;
- the host's own names (MX host, nameservers) and names at, under or above them: 409;
- a zone that exists at PowerDNS and is not mailforge's (the operator's): connect is
  409 ``zone_exists``, nothing is stored, the zone's records are untouched, and no zone
  is carved out under it; a zone that stops being mailforge's before setup fails the
  domain, untouched too;
- an unproven alias domain routes nothing into its target's maps;
- a domain that gave up waiting (``worker.max_attempts``) is served, mailboxes
  included, once check-ns proves it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dnshelp import daemon_overlay, pdns, wait_sink
from support import (
    imap_login_ok,
    imap_subjects,
    postfix_maps,
    ready_mailbox,
    smtp_rcpt,
    tenant,
    wait_job,
)

pytestmark = pytest.mark.stack

SANDBOX_NS = ["ns1.sandbox.test.", "ns2.sandbox.test."]



def _name(prefix: str = "o") -> str:
    return f"{prefix}{secrets.token_hex(5)}.test"


async def _domain(client: Any, dom_id: str) -> dict[str, Any]:
    status, body = await client.get(f"/v1/domains/{dom_id}")
    assert status == 200, body
    return dict(body)


async def _wait_domain(client: Any, dom_id: str, pred: Any, timeout: float = 30.0
                       ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = await _domain(client, dom_id)
        if pred(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"domain never reached the expected state: {body}")



async def _wait_mailbox(client: Any, mailbox_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        _, mb = await client.get(f"/v1/email-users/{mailbox_id}")
        if mb["status"] == status:
            return dict(mb)
        assert time.monotonic() < deadline, mb
        await asyncio.sleep(0.1)


def _maps(sandbox: Any, domain: str) -> dict[str, list[str]]:
    return {name: [line for line in lines if domain in line]
            for name, lines in postfix_maps(sandbox.info["state_dir"]).items()}


def _signing_table(sandbox: Any) -> str:
    path = Path(sandbox.info["state_dir"]) / "dkim" / "SigningTable"
    return path.read_text() if path.exists() else ""


async def _set_ns(sandbox: Any, name: str, nameservers: list[str]) -> None:
    """What the name's owner does at the registrar: where the public view delegates it."""
    await pdns(sandbox, "PATCH", f"/zones/{name}.", {"rrsets": [
        {"name": f"{name}.", "type": "NS", "ttl": 60, "changetype": "REPLACE",
         "records": [{"content": n, "disabled": False} for n in nameservers]}]})


async def _zone_records(sandbox: Any, name: str) -> set[tuple[str, str, str]]:
    _, zone = await pdns(sandbox, "GET", f"/zones/{name}.")
    return {(rr["name"], rr["type"], r["content"]) for rr in zone["rrsets"]
            for r in rr["records"]}


async def test_an_undelegated_name_receives_nothing_until_its_delegation_is_seen(
        sandbox: Any, api: Any) -> None:
    info = sandbox.info
    x = await tenant(api, "ownx-" + secrets.token_hex(3))
    y = await tenant(api, "owny-" + secrets.token_hex(3))
    # Y: an honest tenant, proven in its first pass (the sandbox delegates it).
    y_name = _name("y")
    status, body = await y.post("/v1/domains/connect", {"domains": [y_name]})
    assert status == 201, body
    y_id = body["domains"][0]["id"]
    status, setup = await y.post("/v1/domains/setup", {"domain": y_name})
    assert status == 202, setup
    assert (await wait_job(y, setup["job_id"], timeout=30))["status"] == "completed"
    got = await _domain(y, y_id)
    assert got["status"] == "active" and got["ownership_verified"] is True, got
    sender = await ready_mailbox(y, y_name, "yann")

    # X claims a name delegated elsewhere (think gmail.com): its zone exists at the
    # provider, but the public view names other nameservers.
    name = _name("x")
    status, body = await x.post("/v1/domains/connect", {"domains": [name]})
    assert status == 201, body
    dom = body["domains"][0]
    assert dom["ownership_verified"] is False and dom["nameservers"] == SANDBOX_NS, dom
    await _set_ns(sandbox, name, ["ns1.elsewhere.example.", "ns2.elsewhere.example."])
    status, setup = await x.post("/v1/domains/setup", {"domain": name})
    assert status == 202, setup
    # Recorded, but served nowhere: its job stays open until the name is proven.
    status, victim = await x.post("/v1/email-users", {"domain": name, "username": "someone",
                                                      "name": "Someone"})
    assert status == 202, victim
    waiting = await _wait_domain(x, dom["id"], lambda d: "delegation" in (d["last_error"]
                                                                           or ""))
    assert waiting["status"] == "provisioning" and waiting["ownership_verified"] is False
    assert "ns1.sandbox.test." in waiting["last_error"], waiting
    _, mjob = await x.get(f"/v1/jobs/{victim['job_id']}")
    assert mjob["status"] in ("pending", "processing"), mjob
    _, job = await x.get(f"/v1/jobs/{setup['job_id']}")
    assert job["status"] in ("pending", "processing"), job
    status, check = await x.post("/v1/domains/check-ns", {"domain": name})
    assert status == 200 and check["verified"] is False, check
    assert sorted(check["nameservers"]) == ["ns1.elsewhere.example.", "ns2.elsewhere.example."]

    # Served nowhere: no map line, no signing entry, no login, no local delivery.
    assert _maps(sandbox, name) == {"virtual_domains": [], "virtual_mailboxes": [],
                                    "virtual_aliases": [], "sender_logins": []}
    assert name not in _signing_table(sandbox)
    imap, smtp = info["imap"], info["smtp"]
    assert not await asyncio.to_thread(imap_login_ok, imap["host"], imap["port"],
                                       victim["email"], victim["password"])
    code, _ = await asyncio.to_thread(smtp_rcpt, smtp["host"], smtp["port"],
                                      "sender@outside.test", victim["email"])
    assert code >= 500, code  # port 25: not a domain of this host, no relaying
    status, sent = await y.post(f"/v1/email-users/{sender['id']}/inbox/send", {
        "to": [victim["email"]], "subject": "for the real owner", "body": "private"})
    assert status == 200, sent
    raw = await wait_sink(info["outbox_dir"], victim["email"])
    assert b"for the real owner" in raw  # left for the outside, as for any foreign name
    # X's mailbox there is recorded but not served: not active, cannot send or read.
    status, mb = await x.get(f"/v1/email-users/{victim['id']}")
    assert status == 200 and mb["status"] == "pending", mb
    status, err = await x.post(f"/v1/email-users/{victim['id']}/inbox/send", {
        "to": [sender["email"]], "subject": "s", "body": "b"})
    assert status == 409 and err["error"]["code"] == "email_user_not_active", err
    # The engine kept waiting (a later pass still finds no delegation).
    got = await _domain(x, dom["id"])
    assert got["status"] == "provisioning" and got["ownership_verified"] is False, got

    # The owner delegates the name: check-ns proves it, the domain is served.
    await _set_ns(sandbox, name, SANDBOX_NS)
    status, check = await x.post("/v1/domains/check-ns", {"domain": name})
    assert status == 200 and check["verified"] is True, check
    got = await _wait_domain(x, dom["id"], lambda d: d["status"] == "active")
    assert got["ownership_verified"] is True and got["last_error"] is None, got
    assert (await wait_job(x, setup["job_id"], timeout=30))["status"] == "completed"
    assert (await wait_job(x, victim["job_id"], timeout=30))["status"] == "completed"
    assert _maps(sandbox, name)["virtual_domains"] == [f"{name} OK"]
    assert _maps(sandbox, name)["virtual_mailboxes"] == [f"{victim['email']} OK"]
    mb = await _wait_mailbox(x, victim["id"], "active")
    deadline = time.monotonic() + 20
    while name not in _signing_table(sandbox):
        assert time.monotonic() < deadline, "the proven domain never reached the signer"
        await asyncio.sleep(0.1)
    status, sent = await y.post(f"/v1/email-users/{sender['id']}/inbox/send", {
        "to": [victim["email"]], "subject": "now delivered", "body": "hello"})
    assert status == 200, sent
    deadline = time.monotonic() + 20
    while True:
        subjects = await asyncio.to_thread(imap_subjects, imap["host"], imap["port"],
                                           victim["email"], victim["password"])
        if "now delivered" in subjects:
            break
        assert time.monotonic() < deadline, subjects
        await asyncio.sleep(0.2)
    assert "for the real owner" not in subjects  # what left earlier never came back
    # Proven once, proven for good: a later lapse of the delegation is no un-proof.
    await _set_ns(sandbox, name, ["ns1.elsewhere.example."])
    status, rot = await x.post(f"/v1/domains/{dom['id']}/dkim/rotate")
    assert status == 202, rot
    assert (await wait_job(x, rot["job_id"], timeout=30))["status"] == "completed"
    got = await _domain(x, dom["id"])
    assert got["status"] == "active" and got["ownership_verified"] is True, got
    assert _maps(sandbox, name)["virtual_domains"] == [f"{name} OK"]


@pytest.mark.parametrize("as_operator", [False, True])
async def test_the_hosts_own_names_cannot_be_connected(sandbox: Any, api: Any,
                                                       as_operator: bool) -> None:
    client = api if as_operator else await tenant(api, "res-" + secrets.token_hex(3))
    mx = sandbox.info["mx_hostname"]
    assert mx == "mail.sandbox.test"
    names = [mx, "MAIL.Sandbox.Test.", "mail\u3002sandbox.test", f"x.{mx}", f"a.b.{mx}",
             "sandbox.test", "ns1.sandbox.test", "ns2.sandbox.test", "deep.ns1.sandbox.test"]
    _, before = await client.get("/v1/domains", params={"limit": 1})
    for raw in names:
        status, body = await client.post("/v1/domains/connect", {"domains": [raw]})
        assert status == 409, (raw, body)
        assert body["error"]["code"] == "domain_name_reserved", body
        assert body["error"]["details"][0].startswith("domains[0]: "), body
    # In a batch: all or none, the field named.
    ok = _name("ok")
    status, body = await client.post("/v1/domains/connect",
                                     {"domains": [ok, "x.mail.sandbox.test"]})
    assert status == 409 and body["error"]["details"] == [
        "domains[1]: x.mail.sandbox.test is at, under or above mail.sandbox.test, a name "
        "of this mail host"], body
    _, after = await client.get("/v1/domains", params={"limit": 1})
    assert after["total"] == before["total"]  # nothing stored
    # Unrelated names stay connectable.
    status, body = await client.post("/v1/domains/connect", {"domains": [ok]})
    assert status == 201, body


async def test_an_existing_zone_that_is_not_mailforges_is_never_adopted(
        sandbox: Any, api: Any) -> None:
    x = await tenant(api, "zone-" + secrets.token_hex(3))
    name = _name("op")
    await pdns(sandbox, "POST", "/zones", {"name": f"{name}.", "kind": "Native",
                                           "nameservers": SANDBOX_NS})
    await pdns(sandbox, "PATCH", f"/zones/{name}.", {"rrsets": [
        {"name": f"www.{name}.", "type": "A", "ttl": 300, "changetype": "REPLACE",
         "records": [{"content": "192.0.2.7", "disabled": False}]},
        {"name": f"{name}.", "type": "MX", "ttl": 300, "changetype": "REPLACE",
         "records": [{"content": "10 mx.operator.example.", "disabled": False}]}]})
    before = await _zone_records(sandbox, name)
    for client in (x, api):  # a tenant, and the operator's own account alike
        _, listed = await client.get("/v1/domains", params={"limit": 1})
        status, body = await client.post("/v1/domains/connect", {"domains": [name]})
        assert status == 409, body
        assert body["error"]["code"] == "zone_exists", body
        assert body["error"]["details"][0].startswith("domains[0]: "), body
        _, after = await client.get("/v1/domains", params={"limit": 1})
        assert after["total"] == listed["total"], after  # the connect was undone
    assert await _zone_records(sandbox, name) == before
    _, zone = await pdns(sandbox, "GET", f"/zones/{name}.")
    assert zone["account"] == ""  # not marked as handed over either
    # Nor is a zone carved out of it: a zone for mail.<operator zone> would answer for
    # the operator's names below it.
    for sub in (f"mail.{name}", f"a.b.{name}"):
        status, body = await x.post("/v1/domains/connect", {"domains": [sub]})
        assert status == 409 and body["error"]["code"] == "zone_exists", body
        status, _ = await pdns(sandbox, "GET", f"/zones/{sub}.", ok=(404, 422))
        assert status in (404, 422)
    assert await _zone_records(sandbox, name) == before

    # A zone that stops being mailforge's between connect and setup (its marker gone):
    # the engine refuses it too, permanently, and touches none of its records.
    other = _name("op")
    status, body = await x.post("/v1/domains/connect", {"domains": [other]})
    assert status == 201, body
    dom_id = body["domains"][0]["id"]
    await pdns(sandbox, "PUT", f"/zones/{other}.", {"account": "someone-else"})
    before = await _zone_records(sandbox, other)
    status, setup = await x.post("/v1/domains/setup", {"domain": other})
    assert status == 202
    job = await wait_job(x, setup["job_id"], timeout=30)
    assert job["status"] == "failed", job
    got = await _domain(x, dom_id)
    assert got["status"] == "failed" and "zone_exists" in got["last_error"], got
    assert await _zone_records(sandbox, other) == before
    status, body = await x.post("/v1/domains/check-ns", {"domain": other})
    assert status == 409 and body["error"]["code"] == "zone_exists", body
    assert other not in _signing_table(sandbox)


async def test_an_unproven_alias_domain_routes_nothing_into_its_target(
        sandbox: Any, api: Any) -> None:
    x = await tenant(api, "alias-" + secrets.token_hex(3))
    proven = _name("p")
    status, body = await x.post("/v1/domains/connect", {"domains": [proven]})
    assert status == 201, body
    status, setup = await x.post("/v1/domains/setup", {"domain": proven})
    assert (await wait_job(x, setup["job_id"], timeout=30))["status"] == "completed"
    user = await ready_mailbox(x, proven, "ann")
    # An alias domain claimed for a name delegated elsewhere: with its lines in the
    # target's maps, mail a logged-in sender addresses to ann@<it> would land in ann's
    # mailbox, and ann could send as it.
    claimed = _name("c")
    status, body = await x.post("/v1/domains/connect", {"domains": [claimed]})
    assert status == 201, body
    claimed_id = body["domains"][0]["id"]
    await _set_ns(sandbox, claimed, ["ns1.elsewhere.example."])
    status, setup = await x.post("/v1/domains/setup", {"domain": claimed})
    assert status == 202, setup
    status, job = await x.post("/v1/alias-domains", {"domain": claimed, "target": proven})
    assert status == 202, job
    await _wait_domain(x, claimed_id, lambda d: "delegation" in (d["last_error"] or ""))
    # The target converged its alias-domain change (1 of the job's 2 domains) without
    # the unproven name; the alias domain itself waits for its delegation.
    deadline = time.monotonic() + 30
    while True:
        _, got = await x.get(f"/v1/jobs/{job['job_id']}")
        if got["done"] >= 1:
            break
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.1)
    assert got["status"] == "processing", got
    assert _maps(sandbox, claimed) == {"virtual_domains": [], "virtual_mailboxes": [],
                                       "virtual_aliases": [], "sender_logins": []}
    assert _maps(sandbox, proven)["virtual_domains"] == [f"{proven} OK"]
    # Proven: the alias domain's lines join the target's maps.
    await _set_ns(sandbox, claimed, SANDBOX_NS)
    status, check = await x.post("/v1/domains/check-ns", {"domain": claimed})
    assert status == 200 and check["verified"] is True, check
    await _wait_domain(x, claimed_id, lambda d: d["status"] == "active")
    deadline = time.monotonic() + 20
    while f"ann@{claimed} {user['email']}" not in _maps(sandbox, claimed)["virtual_aliases"]:
        assert time.monotonic() < deadline, _maps(sandbox, claimed)
        await asyncio.sleep(0.1)
    assert _maps(sandbox, claimed)["virtual_domains"] == [f"{claimed} OK"]
    assert (await wait_job(x, job["job_id"], timeout=30))["status"] == "completed"


async def test_a_domain_that_gave_up_waiting_is_served_once_check_ns_proves_it(
        sandbox: Any, api: Any) -> None:
    from conftest import ApiClient

    overlay = {"worker": {"max_attempts": 2, "retry_base_seconds": 0.1,
                          "retry_max_seconds": 0.2}}
    with daemon_overlay(sandbox, overlay):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)
                                         ) as s:
            admin = ApiClient(s, sandbox.info["api_url"], sandbox.info["admin_token"])
            x = await tenant(admin, "gave-" + secrets.token_hex(3))
            name = _name("g")
            status, body = await x.post("/v1/domains/connect", {"domains": [name]})
            assert status == 201, body
            dom_id = body["domains"][0]["id"]
            await _set_ns(sandbox, name, ["ns1.elsewhere.example."])
            status, setup = await x.post("/v1/domains/setup", {"domain": name})
            assert status == 202, setup
            status, mb = await x.post("/v1/email-users", {"domain": name, "username": "kim",
                                                          "name": "Kim"})
            assert status == 202, mb
            failed = await _wait_domain(x, dom_id, lambda d: d["status"] == "failed")
            assert "delegation" in failed["last_error"], failed
            assert (await wait_job(x, setup["job_id"]))["status"] == "failed"
            _, got = await x.get(f"/v1/email-users/{mb['id']}")
            assert got["status"] == "failed", got
            assert _maps(sandbox, name)["virtual_domains"] == []
            # The owner delegates; check-ns proves it and the domain comes back.
            await _set_ns(sandbox, name, SANDBOX_NS)
            status, check = await x.post("/v1/domains/check-ns", {"domain": name})
            assert status == 200 and check["verified"] is True, check
            got = await _wait_domain(x, dom_id, lambda d: d["status"] == "active")
            assert got["ownership_verified"] is True, got
            await _wait_mailbox(x, mb["id"], "active")
            assert _maps(sandbox, name)["virtual_mailboxes"] == [f"kim@{name} OK"]

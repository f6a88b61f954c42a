"""Issue 5 against the real stack: tenant isolation (two sibling sub-accounts and their
parent, every documented endpoint called on the others' resources), the parent acting
only through X-Mailforge-Account, token permissions, revocation, expiry, domain
restriction, and account suspension reaching Dovecot."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import smtplib
import ssl
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from support import imap_login_ok, ready_domain, wait_for, wait_job

pytestmark = pytest.mark.stack

PASSWORD = "Tenant-pass-" + secrets.token_hex(6)


def smtp_auth_ok(host: str, port: int, user: str, password: str) -> bool:
    """Can *user* authenticate on the submission port (i.e. send)?"""
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.ehlo("test.example")
        if s.has_extn("starttls"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            s.ehlo("test.example")
        try:
            s.login(user, password)
            return True
        except smtplib.SMTPAuthenticationError:
            return False


@dataclass
class Tenant:
    name: str
    client: Any
    account_id: str
    token_id: str
    domain: str = ""
    domain_id: str = ""
    user_id: str = ""
    email: str = ""
    job_id: str = ""
    spare_token_id: str = ""
    ids: set[str] = field(default_factory=set)

    def secrets_visible(self) -> set[str]:
        """What no other tenant may ever see in an answer."""
        return {self.account_id, self.token_id, self.domain_id, self.user_id, self.email,
                self.job_id, self.spare_token_id} - {""}


async def _sub_account(parent: Any, label: str, reseller: bool = False) -> tuple[str, str, str]:
    status, body = await parent.post("/v1/reseller/accounts", {
        "email": f"{label}@customers.example", "company_name": f"{label} Ltd",
        "domain_limit": 5, "email_user_limit": 20, "reseller": reseller})
    assert status == 201, body
    return body["account_id"], body["token"], body["token_id"]


async def _populate(t: Tenant, domain: str) -> None:
    dom = await ready_domain(t.client, domain)
    t.domain, t.domain_id = domain, dom["id"]
    status, user = await t.client.post("/v1/email-users", {
        "domain": domain, "username": "owner", "name": "Owner", "password": PASSWORD})
    assert status == 202, user
    t.user_id, t.email, t.job_id = user["id"], user["email"], user["job_id"]
    status, tok = await t.client.post("/v1/auth/tokens",
                                      {"name": "spare", "permissions": ["read"]})
    assert status == 201, tok
    t.spare_token_id = tok["id"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tenants(api: Any) -> dict[str, Tenant]:
    """A reseller P (below the operator) with two sibling customers A and B, each with a
    domain, a mailbox, a job and a spare token."""
    pid, ptok, ptid = await _sub_account(api, "reseller", reseller=True)
    parent = Tenant("P", api.with_token(ptok), pid, ptid)
    out = {"P": parent}
    for label in ("A", "B"):
        aid, tok, tid = await _sub_account(parent.client, f"cust{label}-{secrets.token_hex(3)}")
        out[label] = Tenant(label, api.with_token(tok), aid, tid)
    await asyncio.gather(*(_populate(t, f"t{secrets.token_hex(5)}.test")
                           for t in out.values()))
    for t in out.values():
        job = await wait_job(t.client, t.job_id)
        assert job["status"] == "completed", job
    return out


# The endpoints of the binding contract (api-v1.md), called whether or not the served
# document lists them yet; everything else comes from the document itself.
CONTRACT = """
POST /v1/auth/tokens; GET /v1/auth/tokens; DELETE /v1/auth/tokens/{id}; GET /v1/account;
GET /v1/account/usage; POST /v1/domains/connect; POST /v1/domains/check-ns;
POST /v1/domains/setup; GET /v1/domains; GET /v1/domains/{id};
GET /v1/domains/{id}/dns-status; DELETE /v1/domains/{id}; POST /v1/email-users;
POST /v1/email-users/bulk; GET /v1/email-users; GET /v1/email-users/{id};
PATCH /v1/email-users/{id}; DELETE /v1/email-users/{id}; DELETE /v1/email-users/bulk;
POST /v1/email-users/generate-names; POST /v1/email-users/{id}/inbox/send;
GET /v1/email-users/{id}/inbox; GET /v1/jobs/{id}; GET /v1/jobs;
POST /v1/reseller/accounts; GET /v1/reseller/accounts; GET /v1/reseller/accounts/{id};
PATCH /v1/reseller/accounts/{id}; DELETE /v1/reseller/accounts/{id};
POST /v1/reseller/accounts/{id}/suspend; POST /v1/reseller/accounts/{id}/unsuspend;
GET /v1/reseller/usage; GET /v1/audit
"""


async def _operations(api: Any) -> list[tuple[str, str, dict[str, Any]]]:
    status, doc = await api.get("/v1/openapi.json")
    assert status == 200
    ops = {(method, path): op for path, item in doc["paths"].items()
           for method, op in item.items() if method in ("get", "post", "put", "patch",
                                                        "delete")}
    for entry in CONTRACT.replace("\n", " ").split(";"):
        method, path = entry.split()
        ops.setdefault((method.lower(), path), {})
    return [(m, p, op) for (m, p), op in sorted(ops.items())]


def _fill(path: str, victim: Tenant) -> str:
    """Put the victim's resource of the right kind into each path parameter."""
    kind = path.split("/")[2]
    by_kind = {"domains": victim.domain_id, "email-users": victim.user_id,
               "jobs": victim.job_id, "auth": victim.spare_token_id,
               "reseller": victim.account_id, "aliases": victim.user_id}
    value = by_kind.get(kind, victim.domain_id)
    return re.sub(r"\{[^}]+\}", value, path)


def _no_leak(victim: Tenant, status: int, body: Any, what: str,
             allowed: frozenset[str] = frozenset()) -> None:
    text = json.dumps(body) if not isinstance(body, str) else body
    if status == 409 and isinstance(body, dict) and \
            body.get("error", {}).get("code") == "domain_exists":
        return  # domain names are one global namespace: connecting a taken one is 409
    leaked = [s for s in victim.secrets_visible() - allowed if s in text]
    assert not leaked, f"{what}: answer ({status}) reveals {victim.name}'s {leaked}: {text}"


async def test_isolation_matrix(api: Any, tenants: dict[str, Tenant]) -> None:
    ops = await _operations(api)
    assert any(p.startswith("/v1/domains") for _, p, _ in ops)
    pairs = [("A", "B"), ("B", "A"), ("A", "P"), ("B", "P"), ("P", "A"), ("P", "B")]
    checked = 0
    for actor_name, victim_name in pairs:
        actor, victim = tenants[actor_name], tenants[victim_name]
        parent_of_victim = actor_name == "P"
        for method, path, op in ops:
            if op.get("security") == []:
                continue  # public: health, the document itself
            if parent_of_victim and path.startswith("/v1/reseller/"):
                continue  # managing its children is the parent's right (tested elsewhere)
            url = _fill(path, victim)
            # A body naming the victim's things wherever a body field could point at them.
            body = {"domain": victim.domain, "domains": [victim.domain],
                    "ids": [victim.user_id], "username": "intruder", "name": "intruder",
                    "to": victim.email, "targets": [victim.email], "address": victim.email}
            status, answer = await actor.client.request(
                method.upper(), url, json=body if method in ("post", "put", "patch") else None)
            what = f"{actor_name} {method.upper()} {url}"
            assert status < 500, f"{what}: {status} {answer}"
            # A child knows its parent's account id (parent_id), a parent its children's
            # (it created them); nothing else crosses.
            _no_leak(victim, status, answer, what,
                     frozenset({victim.account_id}) if "P" in (victim_name, actor_name)
                     else frozenset())
            if "{" in path and not (parent_of_victim and path.startswith("/v1/reseller/")):
                # The victim's resource does not exist for the actor.
                assert status in (400, 403, 404, 405, 409, 415, 422), \
                    f"{what}: {status} {answer}"
            checked += 1
    assert checked >= 6 * 10

    # Writes aimed precisely at the victim's resources, bodies valid: all 404 / refused.
    a, b = tenants["A"], tenants["B"]
    assert (await a.client.post("/v1/domains/setup", {"domain": b.domain}))[0] == 404
    assert (await a.client.post("/v1/email-users", {
        "domain": b.domain, "username": "intruder", "name": "x"}))[0] == 404
    assert (await a.client.get(f"/v1/email-users/{b.user_id}"))[0] == 404
    assert (await a.client.get(f"/v1/domains/{b.domain_id}"))[0] == 404
    assert (await a.client.get(f"/v1/jobs/{b.job_id}"))[0] == 404
    assert (await a.client.delete(f"/v1/auth/tokens/{b.spare_token_id}"))[0] == 404
    status, err = await a.client.get("/v1/domains", headers={
        "X-Mailforge-Account": b.account_id})
    assert status == 403 and err["error"]["code"] == "forbidden"
    # A child cannot act for its parent; an unknown account gets the same answer.
    assert (await a.client.get("/v1/domains", headers={
        "X-Mailforge-Account": tenants["P"].account_id}))[0] == 403
    assert (await a.client.get("/v1/domains", headers={
        "X-Mailforge-Account": "acct_00000000000000000000"}))[0] == 403

    # The victims' resources are untouched.
    for t in (a, b, tenants["P"]):
        status, user = await t.client.get(f"/v1/email-users/{t.user_id}")
        assert status == 200 and user["name"] == "Owner" and user["status"] == "active", user
        status, toks = await t.client.get("/v1/auth/tokens")
        assert t.spare_token_id in {x["id"] for x in toks["tokens"]}
        status, acct = await t.client.get("/v1/account")
        assert acct["status"] == "active"


async def test_parent_reaches_children_only_through_acting_header(
        api: Any, tenants: dict[str, Tenant]) -> None:
    p, a, b = tenants["P"], tenants["A"], tenants["B"]
    # Without the header the parent sees only its own things.
    status, doms = await p.client.get("/v1/domains")
    names = {d["name"] for d in doms["domains"]}
    assert p.domain in names and a.domain not in names and b.domain not in names
    # With it, exactly the child's.
    hdr = {"X-Mailforge-Account": a.account_id}
    status, doms = await p.client.get("/v1/domains", headers=hdr)
    assert status == 200 and {d["name"] for d in doms["domains"]} == {a.domain}
    status, user = await p.client.get(f"/v1/email-users/{a.user_id}", headers=hdr)
    assert status == 200 and user["email"] == a.email
    # Acting for A does not open B.
    assert (await p.client.get(f"/v1/email-users/{b.user_id}", headers=hdr))[0] == 404
    # The operator (P's parent) reaches a grandchild too; a read token may not act.
    status, acct = await api.get("/v1/account", headers=hdr)
    assert status == 200 and acct["id"] == a.account_id
    status, tok = await p.client.post("/v1/auth/tokens", {"name": "ro", "permissions": ["read"]})
    ro = api.with_token(tok["token"])
    assert (await ro.get("/v1/account", headers=hdr))[0] == 403
    # Siblings are not resellers: the reseller API is closed to them.
    status, err = await a.client.get("/v1/reseller/accounts")
    assert status == 403 and err["error"]["code"] == "not_reseller"
    status, listing = await p.client.get("/v1/reseller/accounts")
    assert {x["id"] for x in listing["accounts"]} == {a.account_id, b.account_id}


async def test_read_only_token_changes_nothing_anywhere(
        api: Any, tenants: dict[str, Tenant]) -> None:
    a = tenants["A"]
    status, tok = await a.client.post("/v1/auth/tokens", {"name": "reader",
                                                          "permissions": ["read"]})
    assert status == 201
    ro = api.with_token(tok["token"])
    for method, path, op in await _operations(api):
        if method == "get" or op.get("security") == []:
            continue
        url = _fill(path, a)
        body = {"domain": a.domain, "domains": [a.domain], "ids": [a.user_id],
                "username": "ro", "name": "ro", "permissions": ["admin"]}
        status, answer = await ro.request(method.upper(), url, json=body)
        assert status in (403, 404, 405), f"read token {method.upper()} {url}: {status} {answer}"
        if status == 403:
            assert answer["error"]["code"] in ("forbidden", "not_reseller"), answer
    status, user = await a.client.get(f"/v1/email-users/{a.user_id}")
    assert user["name"] == "Owner" and user["status"] == "active"
    status, toks = await a.client.get("/v1/auth/tokens")
    assert {t["name"] for t in toks["tokens"]} >= {"reader", "spare"}
    # But it reads.
    assert (await ro.get("/v1/domains"))[0] == 200


async def test_revoked_and_expired_tokens_get_401(api: Any, tenants: dict[str, Tenant]) -> None:
    a = tenants["A"]
    status, tok = await a.client.post("/v1/auth/tokens", {"name": "short",
                                                          "permissions": ["write"]})
    t = api.with_token(tok["token"])
    assert (await t.get("/v1/domains"))[0] == 200
    assert (await a.client.delete(f"/v1/auth/tokens/{tok['id']}"))[0] == 204
    status, err = await t.get("/v1/domains")
    assert status == 401 and err["error"]["code"] == "unauthorized"
    assert (await a.client.delete(f"/v1/auth/tokens/{tok['id']}"))[0] == 404
    # Expiry.
    status, tok = await a.client.post("/v1/auth/tokens", {
        "name": "brief", "permissions": ["read"], "expires_in_seconds": 1})
    assert status == 201 and tok["expires_at"]
    t = api.with_token(tok["token"])

    async def expired() -> bool:
        return (await t.get("/v1/account"))[0] == 401

    for _ in range(60):
        if await expired():
            break
        await asyncio.sleep(0.1)
    assert await expired()
    # A wrong secret for a live token id is the same 401.
    tid = a.client.token.split(".")[0]
    assert (await api.with_token(tid + ".wrong").get("/v1/account"))[0] == 401


async def test_domain_restricted_token_sees_only_its_domains(
        api: Any, tenants: dict[str, Tenant], unique_domain: str) -> None:
    a = tenants["A"]
    await ready_domain(a.client, unique_domain)
    status, u2 = await a.client.post("/v1/email-users", {
        "domain": unique_domain, "username": "second", "name": "Second"})
    assert status == 202, u2
    status, tok = await a.client.post("/v1/auth/tokens", {
        "name": "one-domain", "permissions": ["write"], "domains": [unique_domain]})
    assert status == 201 and tok["domains"] == [unique_domain], tok
    r = api.with_token(tok["token"])
    status, doms = await r.get("/v1/domains")
    assert [d["name"] for d in doms["domains"]] == [unique_domain] and doms["total"] == 1
    status, users = await r.get("/v1/email-users")
    assert {u["email"] for u in users["users"]} == {f"second@{unique_domain}"}
    assert users["total"] == 1
    assert (await r.get(f"/v1/email-users/{a.user_id}"))[0] == 404
    assert (await r.get(f"/v1/domains/{a.domain_id}"))[0] == 404
    assert (await r.get(f"/v1/jobs/{a.job_id}"))[0] == 404
    status, jobs = await r.get("/v1/jobs")
    assert a.job_id not in {j["id"] for j in jobs["jobs"]}
    assert u2["job_id"] in {j["id"] for j in jobs["jobs"]}
    assert (await r.post("/v1/email-users", {"domain": a.domain, "username": "x",
                                             "name": "x"}))[0] == 404
    status, err = await r.post("/v1/domains/connect", {"domains": ["elsewhere.test"]})
    assert status == 403, err
    # No escalation: account-wide operations and unrestricted tokens are refused.
    assert (await r.get("/v1/audit"))[0] in (403, 404)
    status, err = await r.post("/v1/auth/tokens", {"name": "x", "permissions": ["read"]})
    assert status == 403, err


async def test_suspension_stops_logins_keeps_data_and_is_reversible(
        api: Any, sandbox: Any, tenants: dict[str, Tenant]) -> None:
    p, b = tenants["P"], tenants["B"]
    imap = sandbox.info["imap"]

    sub = sandbox.info["submission"]

    def can_login() -> bool:
        return imap_login_ok(imap["host"], imap["port"], b.email, PASSWORD)

    def can_send() -> bool:
        return smtp_auth_ok(sub["host"], sub["port"], b.email, PASSWORD)

    assert await asyncio.to_thread(can_login)
    assert await asyncio.to_thread(can_send)
    status, res = await p.client.post(f"/v1/reseller/accounts/{b.account_id}/suspend")
    assert status == 202 and res["status"] == "suspended", res
    job = await wait_job(p.client, res["job_id"])
    assert job["status"] == "completed", job
    assert not await asyncio.to_thread(can_login)
    assert not await asyncio.to_thread(can_send)
    # Data kept, readable; writes refused while suspended.
    status, user = await b.client.get(f"/v1/email-users/{b.user_id}")
    assert status == 200 and user["status"] == "suspended", user
    status, err = await b.client.post("/v1/auth/tokens", {"name": "x", "permissions": ["read"]})
    assert status == 403 and err["error"]["code"] == "account_suspended"
    status, acct = await p.client.get(f"/v1/reseller/accounts/{b.account_id}")
    assert acct["status"] == "suspended"

    status, res = await p.client.post(f"/v1/reseller/accounts/{b.account_id}/unsuspend")
    assert status == 202 and res["status"] == "active"
    await wait_job(p.client, res["job_id"])
    await wait_for(can_login)
    await wait_for(can_send)
    status, user = await b.client.get(f"/v1/email-users/{b.user_id}")
    assert user["status"] == "active"


async def test_account_delete_is_a_job_removing_domains_and_mailboxes(
        api: Any, tenants: dict[str, Tenant], unique_domain: str) -> None:
    p = tenants["P"]
    cid, tok, _ = await _sub_account(p.client, f"gone-{secrets.token_hex(3)}")
    c = api.with_token(tok)
    await ready_domain(c, unique_domain)
    status, user = await c.post("/v1/email-users", {"domain": unique_domain,
                                                    "username": "bye", "name": "Bye"})
    await wait_job(c, user["job_id"])
    status, job = await p.client.delete(f"/v1/reseller/accounts/{cid}")
    assert status == 202, job
    # Its token stops at once.
    assert (await c.get("/v1/account"))[0] == 401
    done = await wait_job(p.client, job["job_id"], timeout=30)
    assert done["status"] == "completed", done
    status, _ = await p.client.get(f"/v1/reseller/accounts/{cid}")
    assert status == 404
    # The domain is free again.
    status, _ = await api.post("/v1/domains/connect", {"domains": [unique_domain]})
    assert status == 201


async def test_reseller_limits_patch_and_usage(api: Any, tenants: dict[str, Tenant],
                                               make_domain: Any) -> None:
    p = tenants["P"]
    # A reseller cannot hand out more than it has.
    status, err = await p.client.post("/v1/reseller/accounts", {
        "email": "greedy@customers.example", "domain_limit": 10**6,
        "email_user_limit": 1})
    assert status == 422 and err["error"]["details"][0].startswith("domain_limit:"), err
    cid, tok, _ = await _sub_account(p.client, f"lim-{secrets.token_hex(3)}")
    c = api.with_token(tok)
    status, acct = await p.client.patch(f"/v1/reseller/accounts/{cid}",
                                        {"domain_limit": 1, "company_name": "Renamed"})
    assert status == 200 and acct["limits"]["domains"] == 1 and acct["name"] == "Renamed"
    status, err = await p.client.patch(f"/v1/reseller/accounts/{cid}", {"status": "x"})
    assert status == 400 and "status: unknown field" in err["error"]["details"]
    # The child's limit holds.
    first, second = make_domain(), make_domain()
    assert (await c.post("/v1/domains/connect", {"domains": [first]}))[0] == 201
    status, err = await c.post("/v1/domains/connect", {"domains": [second]})
    assert status == 403 and err["error"]["code"] == "limit_exceeded", err
    status, usage = await c.get("/v1/account/usage")
    assert usage["domains"] == {"used": 1, "limit": 1}
    assert usage["email_users"] == {"used": 0, "limit": 20}
    status, agg = await p.client.get("/v1/reseller/usage")
    mine = {a["account_id"]: a for a in agg["accounts"]}
    assert mine[cid]["domains"] == {"used": 1, "limit": 1}
    assert mine[tenants["A"].account_id]["email_users"]["used"] >= 1
    assert agg["totals"]["domains"] == sum(a["domains"]["used"] for a in agg["accounts"])
    # A sibling's id is not the parent's to reach through another reseller.
    status, _ = await api.get(f"/v1/reseller/accounts/{cid}")
    assert status == 404  # the operator is a grandparent: children only, by design


async def test_restriction_guard_runs_before_any_handler(
        sandbox: Any, tenants: dict[str, Tenant]) -> None:
    """The guard in authenticate()/json_body() refuses ids and domains outside a
    restricted token's list whatever the handler then does (e.g. one using its own
    store query): path ids and body ``domain``/``ids`` fields."""

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from mailforge import config as config_mod
    from mailforge import secretbox
    from mailforge.api import http
    from mailforge.api.context import CTX
    from mailforge.errors import NotFound
    from mailforge.service.context import ServiceContext
    from mailforge.store.store import Store, create_pool

    a = tenants["A"]
    cfg = config_mod.load(sandbox.info["config_path"])
    pool = await create_pool(cfg.database.dsn, 1, 2)
    try:
        store = Store(pool, cfg.host.name)
        _, token, _ = await store.tokens.create(a.account_id, "guarded", ["write"],
                                               ["elsewhere.test"])
        app = web.Application()
        app[CTX] = ServiceContext(cfg=cfg, store=store, box=secretbox.from_config(cfg))
        hdrs = {"Authorization": f"Bearer {token}"}
        for value in (a.user_id, a.domain_id, a.job_id):
            req = make_mocked_request("DELETE", f"/v1/anything/{value}", headers=hdrs,
                                      match_info={"id": value}, app=app)
            with pytest.raises(NotFound):
                await http.authenticate(req, "write")
        req = make_mocked_request("POST", "/v1/anything", headers=hdrs, app=app)
        principal = await http.authenticate(req, "write")
        assert principal.domains == frozenset({"elsewhere.test"})
        for body in ({"domain": a.domain}, {"domain": a.domain_id}, {"ids": [a.user_id]}):
            with pytest.raises(NotFound):
                await http._guard_body(req, body)
        await http._guard_body(req, {"domain": "elsewhere.test", "ids": ["whk_1"]})
    finally:
        await pool.close()

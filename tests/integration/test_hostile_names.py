"""Issue 9 (items 3, 4, 7, parts of 6 and 11) against the real stack, as a hostile tenant
would try it: names with newlines, NUL, Unicode line separators, surrogates and other
spellings of an existing name; claiming names at, under or above another tenant's
domain; a refused alias update that must change nothing (store rows and map files
fingerprinted before and after); token restrictions to foreign domains; a reseller
contact address that is an IP literal."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from support import postfix_maps, ready_domain, wait_job

pytestmark = pytest.mark.stack

# Trailing or embedded characters that must never make a second spelling of a name.
HOSTILE_SUFFIXES = ["\n", "\r", "\r\n", "\0", "\t", " ", "\u2028", "\u2029", "\u0085",
                    "\ud800", "\udfff", "\u200b", "\u00ad", "\x7f", "\x1b"]


@dataclass
class Tenant:
    client: Any
    account_id: str
    domain: str = ""
    domain_id: str = ""


async def _tenant(api: Any, label: str) -> Tenant:
    status, body = await api.post("/v1/reseller/accounts", {
        "email": f"{label}@customers.example", "company_name": f"{label} Ltd",
        "domain_limit": 40, "email_user_limit": 40})
    assert status == 201, body
    return Tenant(api.with_token(body["token"]), body["account_id"])


def _name() -> str:
    return f"h{secrets.token_hex(5)}.test"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pair(api: Any) -> tuple[Tenant, Tenant]:
    """Tenants X and Y, each with a set-up domain."""
    x, y = await _tenant(api, "x-" + secrets.token_hex(3)), \
        await _tenant(api, "y-" + secrets.token_hex(3))
    for t in (x, y):
        t.domain = _name()
        dom = await ready_domain(t.client, t.domain)
        t.domain_id = dom["id"]
        await _wait_active(t)
    return x, y


async def _wait_active(t: Tenant, timeout: float = 30) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(int(timeout / 0.1)):
        status, body = await t.client.get(f"/v1/domains/{t.domain_id}")
        assert status == 200, body
        if body["status"] == "active":
            return body
        assert body["status"] != "failed", body
        await asyncio.sleep(0.1)
    raise AssertionError(f"domain not active: {body}")


def _details(err: Any) -> str:
    return " | ".join(err["error"].get("details", [])) if isinstance(err, dict) else str(err)


def _map_lines(sandbox: Any, domain: str) -> dict[str, list[str]]:
    """Every line of every Postfix map that mentions *domain*."""
    return {name: sorted(line for line in lines if domain in line)
            for name, lines in postfix_maps(sandbox.info["state_dir"]).items()}


def _maps_are_clean(sandbox: Any) -> None:
    """No map line holds whitespace or a control character beyond its one separator."""
    for name, lines in postfix_maps(sandbox.info["state_dir"]).items():
        for line in lines:
            key, _, value = line.partition(" ")
            assert key and value and " " not in value, (name, line)
            assert all(33 <= ord(c) < 127 for c in key + value), (name, line)


async def _fingerprint(sandbox: Any, t: Tenant) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """The tenant's rows (domains, mailboxes, aliases, jobs, tokens) and the map lines
    of its domain."""
    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        rows = {}
        for table, cond in (("domains", "account_id = $1"), ("mailboxes", "account_id = $1"),
                            ("aliases", "account_id = $1"), ("jobs", "account_id = $1"),
                            ("api_tokens", "account_id = $1"), ("accounts", "id = $1")):
            cols = "*" if table != "api_tokens" else "id, name, permissions, domains, " \
                "revoked_at, expires_at"
            got = await conn.fetch(f"SELECT {cols} FROM {table} WHERE {cond} "
                                   "ORDER BY id", t.account_id)
            # Left out: what the engine and DNS checks change on their own.
            rows[table] = [{k: str(v) for k, v in dict(r).items()
                            if k not in ("last_used_at", "lease_owner", "lease_until",
                                         "next_attempt_at", "dns_checked_at", "attempts",
                                         "dns_revisit_at", "dns_report")
                            and not (table == "domains" and k == "updated_at")}
                           for r in got]
    finally:
        await conn.close()
    # The rows themselves (not a digest): a mismatch then shows which column moved.
    return tuple(json.dumps(rows, sort_keys=True, indent=0).splitlines()), \
        _map_lines(sandbox, t.domain) if t.domain else {}


async def _settled(sandbox: Any, t: Tenant) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """A fingerprint once nothing of the tenant is still converging."""
    async def converged() -> bool:
        conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
        try:
            return not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE account_id = $1 "
                "AND status IN ('pending', 'processing'))", t.account_id)
        finally:
            await conn.close()

    for _ in range(300):
        if await converged():
            break
        await asyncio.sleep(0.1)
    # A domain just connected still takes passes without a job (its delegation check,
    # at the engine's next poll, every 2 s in the sandbox): settled is when two readings
    # further apart than a poll agree.
    last = await _fingerprint(sandbox, t)
    for _ in range(10):
        await asyncio.sleep(3.0)
        now = await _fingerprint(sandbox, t)
        if now == last:
            return now
        last = now
    return last


def _assert_same(now: tuple[tuple[str, ...], dict[str, list[str]]],
                 before: tuple[tuple[str, ...], dict[str, list[str]]]) -> None:
    """Equal fingerprints; otherwise the lines that moved, so a failure says what."""
    import difflib

    rows = "\n".join(difflib.unified_diff(before[0], now[0], "before", "now", lineterm="",
                                          n=8))
    assert now[0] == before[0], rows
    assert now[1] == before[1]


# ----------------------------------------------------------------------------- item 3


async def test_hostile_usernames_never_make_a_second_mailbox(
        sandbox: Any, pair: tuple[Tenant, Tenant]) -> None:
    x, _ = pair
    status, bob = await x.client.post("/v1/email-users", {
        "domain": x.domain, "username": "bob", "name": "Bob"})
    assert status == 202, bob
    assert (await wait_job(x.client, bob["job_id"]))["status"] == "completed"
    before = await _settled(sandbox, x)
    spellings = [f"bob{s}" for s in HOSTILE_SUFFIXES] + \
        [f"{s}bob" for s in HOSTILE_SUFFIXES] + ["Bob", "BOB", "bOb", "bo\nb", "b\u0131b",
                                                 "\u212aob", "bob\u3002", "bob@" + x.domain]
    for username in spellings:
        for path, body in (
                ("/v1/email-users", {"domain": x.domain, "username": username}),
                ("/v1/email-users/bulk", {"domain": x.domain,
                                          "users": [{"username": username}]}),
                ("/v1/aliases", {"domain": x.domain, "username": username,
                                 "targets": ["someone@elsewhere.example"]})):
            status, err = await x.client.post(path, body)
            assert status in (400, 409), (path, repr(username), status, err)
            field = "users[0].username" if "bulk" in path else "username"
            assert field in _details(err), (path, repr(username), err)
    # Two spellings of one name in one bulk request: refused as a whole.
    status, err = await x.client.post("/v1/email-users/bulk", {
        "domain": x.domain, "users": [{"username": "carl"}, {"username": "CARL"}]})
    assert status == 400 and "users[1].username" in _details(err), err
    _assert_same(await _settled(sandbox, x), before)
    status, users = await x.client.get("/v1/email-users", params={"domain": x.domain})
    assert status == 200 and [u["username"] for u in users["users"]] == ["bob"], users
    _maps_are_clean(sandbox)


async def test_alias_with_bad_target_is_400_and_domain_not_stuck(
        sandbox: Any, pair: tuple[Tenant, Tenant]) -> None:
    x, _ = pair
    before = await _settled(sandbox, x)
    bad_targets = [f"carol{s}@{x.domain}" for s in HOSTILE_SUFFIXES] + \
        [f"carol@{x.domain}{s}" for s in HOSTILE_SUFFIXES] + \
        ["carol@[127.0.0.1]", "carol@127.0.0.1", f'"carol"@{x.domain}', "carol",
         f"carol@@{x.domain}", f"carol@{x.domain}..", "", f"ca rol@{x.domain}",
         f"carol@{x.domain}\u2028evil.test", "@" + x.domain, f"fwd-bad@{x.domain}"]
    for target in bad_targets:
        status, err = await x.client.post("/v1/aliases", {
            "domain": x.domain, "username": "fwd-bad", "targets": [target]})
        assert status == 400, (repr(target), status, err)
        assert "targets" in _details(err), (repr(target), err)
    _assert_same(await _settled(sandbox, x), before)
    # Other spellings of a good target are stored in their canonical form.
    status, alias = await x.client.post("/v1/aliases", {
        "domain": x.domain, "username": "fwd-good",
        "targets": [f"Carol@{x.domain.upper()}.", "dave@b\u00fccher\u3002example"]})
    assert status == 202, alias
    assert alias["targets"] == [f"carol@{x.domain}", "dave@xn--bcher-kva.example"], alias
    assert (await wait_job(x.client, alias["job_id"]))["status"] == "completed"
    # The domain took the change and is not stuck.
    assert (await _wait_active(x))["last_error"] is None
    assert f"fwd-good@{x.domain} carol@{x.domain},dave@xn--bcher-kva.example" in \
        _map_lines(sandbox, x.domain)["virtual_aliases"]
    status, gone = await x.client.delete(f"/v1/aliases/{alias['id']}")
    assert status == 202, gone
    assert (await wait_job(x.client, gone["job_id"]))["status"] == "completed"
    _maps_are_clean(sandbox)


# ----------------------------------------------------------------------------- item 7


async def test_refused_alias_update_changes_nothing(
        sandbox: Any, pair: tuple[Tenant, Tenant]) -> None:
    x, _ = pair
    status, alias = await x.client.post("/v1/aliases", {
        "domain": x.domain, "username": "loop", "targets": [f"bob@{x.domain}"]})
    assert status == 202, alias
    assert (await wait_job(x.client, alias["job_id"]))["status"] == "completed"
    before = await _settled(sandbox, x)
    assert f"loop@{x.domain} bob@{x.domain}" in before[1]["virtual_aliases"]
    refused = [
        [f"loop@{x.domain}"],                           # itself
        [f"LOOP@{x.domain.upper()}."],                  # itself, other spelling
        [f"bob@{x.domain}", f"loop@{x.domain}"],         # itself among others
        [f"loop@{x.domain.replace('.', chr(0x3002))}"],  # itself, Unicode full stop
        [f"bob\n@{x.domain}"], [f"bob@{x.domain}\n"], ["bob@[127.0.0.1]"],
        [f"bob@{x.domain}", f"BOB@{x.domain}"],          # twice
        [], "bob", [None], [f"bob@{x.domain}"] * 51,
    ]
    for targets in refused:
        status, err = await x.client.patch(f"/v1/aliases/{alias['id']}",
                                           {"targets": targets})
        assert status == 400, (targets, status, err)
        assert "targets" in _details(err), err
    status, err = await x.client.patch(f"/v1/aliases/{alias['id']}",
                                       {"targets": [f"bob@{x.domain}"], "extra": 1})
    assert status == 400
    # Nothing changed: rows (generation, targets, jobs) and the map lines.
    _assert_same(await _settled(sandbox, x), before)
    status, got = await x.client.get(f"/v1/aliases/{alias['id']}")
    assert got["targets"] == [f"bob@{x.domain}"] and got["status"] == "active", got


# ----------------------------------------------------------------------------- item 4


async def test_names_at_under_or_above_another_tenants_domain_are_refused(
        sandbox: Any, api: Any, pair: tuple[Tenant, Tenant]) -> None:
    x, y = pair
    # X also holds a name with a parent that could be connected: a.<parent>.
    parent = _name()
    status, body = await x.client.post("/v1/domains/connect", {"domains": [f"a.{parent}"]})
    assert status == 201, body
    before_y = await _settled(sandbox, y)
    claims = [f"mta-sts.{x.domain}", f"mail.{x.domain}", f"sub.{x.domain}",
              f"a.b.{x.domain}", f"autoconfig.{x.domain.upper()}", parent,
              parent.upper() + ".", f"b.a.{parent}", f"MAIL.A.{parent}",
              f"x.a{chr(0x3002)}{parent}"]
    for name in claims:
        status, err = await y.client.post("/v1/domains/connect", {"domains": [name]})
        assert status == 409, (name, status, err)
        assert err["error"]["code"] == "domain_name_owned", err
        assert "domains[0]" in _details(err), err
        assert x.account_id not in json.dumps(err), err  # never says who owns it
    spellings = [x.domain, x.domain.upper(), x.domain + ".", x.domain.replace(".", "\u3002"),
                 x.domain.replace(".", "\uff0e"), x.domain.replace(".", "\uff61") + "\u3002",
                 f"a.{parent}", f"A.{parent}".replace(".", "\u3002")]
    for name in spellings:
        status, err = await y.client.post("/v1/domains/connect", {"domains": [name]})
        assert status == 409 and err["error"]["code"] == "domain_exists", (name, err)
        assert "domains[0]" in _details(err) and x.account_id not in json.dumps(err)
    # Hostile spellings are no name at all.
    for suffix in HOSTILE_SUFFIXES:
        status, err = await y.client.post("/v1/domains/connect",
                                          {"domains": [f"mail.{x.domain}{suffix}"]})
        assert status in (400, 409), (repr(suffix), status, err)
        assert "domains[0]" in _details(err), err
    # A public suffix is no one's: owning it would claim every name under it.
    for name in ("co.uk", "github.io", "CO\u3002UK.", "foo.ck"):
        status, err = await y.client.post("/v1/domains/connect", {"domains": [name]})
        assert status == 400 and "public suffix" in _details(err), (name, status, err)
    # All or nothing: a free name next to a claimed one is not connected either.
    free = _name()
    status, err = await y.client.post("/v1/domains/connect",
                                      {"domains": [free, f"mail.{x.domain}"]})
    assert status == 409 and "domains[1]" in _details(err), err
    _assert_same(await _settled(sandbox, y), before_y)
    status, doms = await y.client.get("/v1/domains")
    assert free not in {d["name"] for d in doms["domains"]}
    # The owner itself may connect names under (and above) its own domains.
    status, body = await x.client.post("/v1/domains/connect",
                                       {"domains": [f"mail.{x.domain}", parent]})
    assert status == 201, body
    # And the operator (another account) is bound by the same rule.
    status, err = await api.post("/v1/domains/connect", {"domains": [f"x.mail.{x.domain}"]})
    assert status == 409 and err["error"]["code"] == "domain_name_owned", err


async def test_parent_and_child_connected_at_once_one_wins(
        pair: tuple[Tenant, Tenant]) -> None:
    """Two accounts racing for a parent and its child: the check is serialised, so never
    both."""
    x, y = pair
    for _ in range(6):
        parent = _name()
        results = await asyncio.gather(
            x.client.post("/v1/domains/connect", {"domains": [f"sub.{parent}"]}),
            y.client.post("/v1/domains/connect", {"domains": [parent]}))
        codes = sorted(s for s, _ in results)
        assert codes == [201, 409], results


# ---------------------------------------------------------------------------- item 11


async def test_token_restriction_only_to_own_domains(
        sandbox: Any, pair: tuple[Tenant, Tenant]) -> None:
    x, y = pair
    before = await _settled(sandbox, x)
    for domains, field in (([y.domain], "domains[0]"),
                           ([x.domain, y.domain], "domains[1]"),
                           ([x.domain, _name()], "domains[1]"),
                           ([y.domain.upper() + "."], "domains[0]"),
                           ([f"mail.{x.domain}x"], "domains[0]"),
                           ([x.domain + "\n"], "domains[0]"),
                           ([x.domain + "\u2028"], "domains[0]")):
        status, err = await x.client.post("/v1/auth/tokens", {
            "name": "foreign", "permissions": ["read"], "domains": domains})
        assert status == 400, (domains, status, err)
        assert field in _details(err), (domains, err)
        assert y.account_id not in json.dumps(err)
    _assert_same(await _settled(sandbox, x), before)
    # Its own domain, in any spelling, is stored canonical.
    status, tok = await x.client.post("/v1/auth/tokens", {
        "name": "own", "permissions": ["read"],
        "domains": [x.domain.upper().replace(".", "\u3002"), x.domain + "."]})
    assert status == 201 and tok["domains"] == [x.domain], tok
    r = x.client.with_token(tok["token"])
    status, doms = await r.get("/v1/domains")
    assert [d["name"] for d in doms["domains"]] == [x.domain]


async def test_reseller_email_is_a_real_address(sandbox: Any, api: Any) -> None:
    bad = ["a@[127.0.0.1]", "a@127.0.0.1", "a@[IPv6:::1]", '"a b"@example.com',
           "a@example.com\n", "a\n@example.com", "a@exa mple.com", "a@localhost",
           "a@b@example.com", "a@example.com\u2028", "a\ud800@example.com", "a@", "@x.com",
           "a..b@example.com", "a@-x.example", "a" * 65 + "@example.com", 7, None]
    for email in bad:
        status, err = await api.post("/v1/reseller/accounts", {
            "email": email, "domain_limit": 1, "email_user_limit": 1})
        assert status == 400, (email, status, err)
        assert "email" in _details(err), err
    status, body = await api.post("/v1/reseller/accounts", {
        "email": "Someone+tag@Example\u3002COM.", "domain_limit": 1, "email_user_limit": 1})
    assert status == 201, body
    assert body["email"] == "Someone+tag@example.com", body
    sub = Tenant(api.with_token(body["token"]), body["account_id"])
    before = await _fingerprint(sandbox, sub)
    for email in bad[:6]:
        status, err = await api.patch(f"/v1/reseller/accounts/{sub.account_id}",
                                      {"email": email})
        assert status == 400, (email, status, err)
    _assert_same(await _fingerprint(sandbox, sub), before)


# ----------------------------------------------------------------------------- item 6


async def test_every_spelling_of_a_domain_finds_the_same_domain(
        pair: tuple[Tenant, Tenant]) -> None:
    x, _ = pair
    spellings = [x.domain.upper(), x.domain + ".", x.domain.replace(".", "\u3002"),
                 x.domain.replace(".", "\uff0e"), x.domain.replace(".", "\uff61")]
    for n, spelling in enumerate(spellings):
        status, user = await x.client.post("/v1/email-users", {
            "domain": spelling, "username": f"spell{n}"})
        assert status == 202, (spelling, user)
        assert user["email"] == f"spell{n}@{x.domain}", user
        status, page = await x.client.get("/v1/email-users",
                                          params={"domain": spelling, "search": f"spell{n}"})
        assert status == 200 and [u["email"] for u in page["users"]] == \
            [f"spell{n}@{x.domain}"], (spelling, page)
    status, err = await x.client.post("/v1/email-users", {
        "domain": x.domain + "\n", "username": "nl"})
    assert status == 400 and "domain" in _details(err), err


async def test_domain_ids_are_matched_in_full(pair: tuple[Tenant, Tenant]) -> None:
    x, _ = pair
    for ref in (x.domain_id + "\n", x.domain_id + "\0", x.domain_id.upper(),
                x.domain_id + "\u2028", x.domain_id + " "):
        status, err = await x.client.post("/v1/aliases", {
            "domain": ref, "username": "byid", "targets": [f"bob@{x.domain}"]})
        assert status in (400, 404), (repr(ref), status, err)
    status, alias = await x.client.post("/v1/aliases", {
        "domain": x.domain_id, "username": "byid", "targets": [f"bob@{x.domain}"]})
    assert status == 202, alias


async def test_malformed_ids_in_paths_are_404_never_500(
        api: Any, pair: tuple[Tenant, Tenant]) -> None:
    x, _ = pair
    tails = ["%00", "%0A", "%0D%0A", "%E2%80%A8", "%20", "X"]
    status, users = await x.client.get("/v1/email-users")
    status, aliases = await x.client.get("/v1/aliases")
    status, jobs = await x.client.get("/v1/jobs")
    real = {"domains": x.domain_id, "email-users": users["users"][0]["id"],
            "aliases": aliases["aliases"][0]["id"], "jobs": jobs["jobs"][0]["id"]}
    for kind, rid in real.items():
        assert (await x.client.get(f"/v1/{kind}/{rid}"))[0] == 200
        for tail in tails:
            url = f"/v1/{kind}/{rid}{tail}"
            status, err = await x.client.get(url)
            assert status in (400, 404), (url, status, err)
    for tail in tails:
        status, err = await api.get(f"/v1/reseller/accounts/{x.account_id}{tail}")
        assert status in (400, 404), (tail, status, err)
        status, err = await x.client.delete(f"/v1/auth/tokens/tok_abc{tail}")
        assert status in (400, 404), (tail, status, err)


async def test_the_name_search_can_use_its_indexes(sandbox: Any) -> None:
    """The ownership check stays an index lookup however many domains there are."""
    from mailforge.store.domains import _relatives_params
    from mailforge.store.queries import Q

    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + Q.domain_name_relatives,
                *_relatives_params(["mail.example.test", "example.org"])))
    finally:
        await conn.close()
    assert "domains_name_reversed_idx" in plan and "domains_name_key" in plan, plan

"""The mailbox and alias slice of issue 10 against the real stack: the seeds' requests as
written (Winnr's generate-names style, a domain id as the list filter), the
Idempotency-Key checked before the domain rules (a retry after the domain got blocked
gets the stored answer), alias lists paged by cursor, and the hostile-tenant side of
each: another tenant's domain id, a domain outside a token's restriction, forged and
foreign cursors."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest
from support import ready_domain, tenant, wait_job

pytestmark = pytest.mark.stack


async def _block(sandbox: Any, domain_id: str) -> None:
    """Block a domain by its reputation (five complaints, as the inbound scanner
    records reports about messages we sent)."""
    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        for _ in range(5):
            await conn.execute("INSERT INTO mail_reputation_events (domain_id, kind, ref) "
                               "VALUES ($1, 'complaint', $2)", domain_id,
                               secrets.token_hex(8))
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- seeds


async def test_winnr_generate_names_request_as_written(api: Any) -> None:
    # Winnr's guide: {"count": 5, "style": "professional"} -> ["sarah.chen", "james.r", ...]
    status, body = await api.post("/v1/email-users/generate-names",
                                  {"count": 5, "style": "professional"})
    assert status == 200, body
    assert isinstance(body, list) and len(body) == 5 and len(set(body)) == 5
    # professional is our dotted style: first.last, first.l, f.last, in turn.
    assert all("." in name for name in body), body
    status, err = await api.post("/v1/email-users/generate-names",
                                 {"count": 5, "style": "casual-ish"})
    assert status == 400 and err["error"]["details"][0].startswith("style: "), err


async def test_list_filter_takes_a_domain_id_like_creation_does(api: Any,
                                                                make_domain: Any) -> None:
    name, other = make_domain(), make_domain()
    dom = await ready_domain(api, name)
    await ready_domain(api, other)
    for username, domain in (("ann", dom["id"]), ("ben", name), ("cat", other)):
        status, user = await api.post("/v1/email-users", {"domain": domain,
                                                          "username": username})
        assert status == 202, user
    # Winnr's integrator filters by the id it was given at connect.
    status, page = await api.get("/v1/email-users", params={"domain": dom["id"]})
    assert status == 200, page
    assert sorted(u["username"] for u in page["users"]) == ["ann", "ben"], page
    assert page["total"] == 2
    status, same = await api.get("/v1/email-users", params={"domain": name.upper() + "."})
    assert status == 200 and same["total"] == 2, same
    # No such id: 404 naming nothing about anyone.
    status, err = await api.get("/v1/email-users", params={"domain": "dom_nosuchdomain00"})
    assert status == 404, err
    # Aliases take the same filter.
    status, alias = await api.post("/v1/aliases", {"domain": dom["id"], "username": "sales",
                                                   "targets": [f"ann@{name}"]})
    assert status == 202, alias
    status, aliases = await api.get("/v1/aliases", params={"domain": dom["id"]})
    assert status == 200 and [a["address"] for a in aliases["aliases"]] == \
        [f"sales@{name}"], aliases


# ---------------------------------------------------------------------- hostile tenants


async def test_another_tenants_domain_id_is_not_found_in_filters(
        api: Any, make_domain: Any) -> None:
    mine, theirs = make_domain(), make_domain()
    me = await tenant(api, f"filt-a-{secrets.token_hex(3)}")
    them = await tenant(api, f"filt-b-{secrets.token_hex(3)}")
    await ready_domain(me, mine)
    their_dom = await ready_domain(them, theirs)
    status, user = await them.post("/v1/email-users", {"domain": theirs,
                                                       "username": "secret"})
    assert status == 202, user
    for path in ("/v1/email-users", "/v1/aliases"):
        status, err = await me.get(path, params={"domain": their_dom["id"]})
        assert status == 404, (path, err)
        assert theirs not in str(err) and "secret" not in str(err), err
        # By name it simply matches nothing of mine.
        status, page = await me.get(path, params={"domain": theirs})
        assert status == 200 and page["total"] == 0, (path, page)
    # Nor can another tenant's domain id be used to generate names against it.
    status, err = await me.post("/v1/email-users/generate-names",
                                {"count": 1, "domains": [their_dom["id"]]})
    assert status == 404, err


async def test_restricted_token_filters_only_within_its_domains(
        api: Any, make_domain: Any) -> None:
    inside, outside = make_domain(), make_domain()
    acct = await tenant(api, f"filt-r-{secrets.token_hex(3)}")
    await ready_domain(acct, inside)
    out_dom = await ready_domain(acct, outside)
    status, user = await acct.post("/v1/email-users", {"domain": outside,
                                                       "username": "hidden"})
    assert status == 202, user
    status, tok = await acct.post("/v1/auth/tokens", {"name": "restricted",
                                                      "permissions": ["write"],
                                                      "domains": [inside]})
    assert status == 201, tok
    restricted = acct.with_token(tok["token"])
    status, err = await restricted.get("/v1/email-users", params={"domain": out_dom["id"]})
    assert status == 404, err
    status, page = await restricted.get("/v1/email-users", params={"domain": outside})
    assert status == 200 and page["total"] == 0, page
    status, page = await restricted.get("/v1/email-users")
    assert status == 200 and "hidden" not in [u["username"] for u in page["users"]]


async def test_alias_cursor_pages_and_forged_or_foreign_cursors(
        api: Any, make_domain: Any) -> None:
    name, theirs = make_domain(), make_domain()
    me = await tenant(api, f"cur-a-{secrets.token_hex(3)}")
    them = await tenant(api, f"cur-b-{secrets.token_hex(3)}")
    await ready_domain(me, name)
    await ready_domain(them, theirs)
    for n in range(5):
        status, body = await me.post("/v1/aliases", {
            "domain": name, "username": f"a{n}", "targets": [f"x{n}@elsewhere.example"]})
        assert status == 202, body
    status, body = await them.post("/v1/aliases", {
        "domain": theirs, "username": "zz", "targets": ["y@elsewhere.example"]})
    assert status == 202, body
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        status, page = await me.get("/v1/aliases", params=params)
        assert status == 200, page
        assert page["total"] == 5, page
        seen += [a["address"] for a in page["aliases"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"a{n}@{name}" for n in range(5)]
    # The other tenant replaying my cursor sees only its own aliases after that point.
    status, first = await me.get("/v1/aliases", params={"limit": 1})
    status, page = await them.get("/v1/aliases", params={"cursor": first["next_cursor"]})
    assert status == 200 and all(a["address"].endswith(theirs) for a in page["aliases"])
    # Forged cursors are a 400 naming the cursor, never a 500.
    for forged in ("x", "AAAA", "W10", "WzEsImFkZHJlc3MiLFsxXV0", "!" * 40,
                   "WzEsImNyZWF0ZWRfYXQiLFsiYSJdXQ"):
        status, err = await me.get("/v1/aliases", params={"cursor": forged})
        assert status == 400, (forged, err)
        assert err["error"]["details"][0].startswith("cursor: "), err


# ------------------------------------------------------------------------ idempotency


async def test_retry_after_the_domain_was_blocked_gets_the_stored_answer(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    """The key is checked before readiness and the reputation guard: the retry of a
    request that succeeded is answered from the key, not refused by the new state."""
    dom = await ready_domain(api, unique_domain)
    key = secrets.token_hex(8)
    body = {"domain": unique_domain, "username": "first"}
    status, first = await api.post("/v1/email-users", body,
                                   headers={"Idempotency-Key": key})
    assert status == 202 and "password" in first, first
    bulk_key = secrets.token_hex(8)
    bulk = {"domain": dom["id"], "users": [{"username": "bulk1"}]}
    status, first_bulk = await api.post("/v1/email-users/bulk", bulk,
                                        headers={"Idempotency-Key": bulk_key})
    assert status == 202, first_bulk
    await _block(sandbox, dom["id"])
    status, again = await api.post("/v1/email-users", body,
                                   headers={"Idempotency-Key": key})
    assert status == 202 and again == first, again
    status, again_bulk = await api.post("/v1/email-users/bulk", bulk,
                                        headers={"Idempotency-Key": bulk_key})
    assert status == 202 and again_bulk == first_bulk, again_bulk
    # A new request is refused by the guard.
    status, err = await api.post("/v1/email-users", {"domain": unique_domain,
                                                     "username": "second"})
    assert status == 409 and err["error"]["code"] == "domain_reputation_blocked", err


async def test_bulk_secrets_are_on_the_job_when_it_is_created(
        api: Any, unique_domain: str) -> None:
    """The sealed one-time passwords are written in the job's own transaction."""
    await ready_domain(api, unique_domain)
    status, body = await api.post("/v1/email-users/bulk", {
        "domain": unique_domain, "users": [{"username": "p1"},
                                           {"username": "p2", "password": "x" * 24}]})
    assert status == 202, body
    status, job = await api.get(f"/v1/jobs/{body['job_id']}")
    assert status == 200, job
    by_name = {u["username"]: u for u in job["users"]}
    assert len(by_name["p1"]["password"]) >= 20 and "password" not in by_name["p2"], job
    done = await wait_job(api, body["job_id"])
    assert done["status"] == "completed", done

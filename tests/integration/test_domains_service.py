"""The domain slice on the real stack (issue 10): the Smailor seed's ``GET /v1/domains``
lists each domain with the reputation ``GET /v1/domains/{id}`` shows; the list pages by
cursor within the account and the token's domain restriction; a refused DKIM rotation
changes nothing (and an accepted one only records the request); check-ns names the
setup it queues; every one of them is a 404 for another tenant."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest
from support import tenant, wait_job

pytestmark = pytest.mark.stack


def _name(label: str) -> str:
    return f"{label}-{secrets.token_hex(4)}.test"


async def _connect(client: Any, *names: str) -> list[dict[str, Any]]:
    status, body = await client.post("/v1/domains/connect", {"domains": list(names)})
    assert status == 201, body
    return list(body["domains"])


async def _complaints(dsn: str, domain_id: str, n: int) -> None:
    """Record *n* complaints against the domain, as the inbound scanner does once it
    judged the reports to be about messages the domain sent."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO mail_reputation_events (domain_id, kind, ref) "
            "VALUES ($1, 'complaint', $2)",
            [(domain_id, f"complaint:{secrets.token_hex(8)}@test") for _ in range(n)])
    finally:
        await conn.close()


async def _row(dsn: str, domain_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT generation, dkim_rotate_requested_at, "
            "(SELECT count(*) FROM dkim_keys k WHERE k.domain_id = d.id) AS keys, "
            "(SELECT count(*) FROM jobs j WHERE j.resource_id = d.id) AS jobs "
            "FROM domains d WHERE id = $1", domain_id)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def test_the_smailor_domain_list_carries_each_domains_reputation(
        sandbox: Any, api: Any) -> None:
    x = await tenant(api, "rep-" + secrets.token_hex(3))
    calm, loud = await _connect(x, _name("calm"), _name("loud"))
    await _complaints(sandbox.info["postgres_dsn"], loud["id"], 3)

    # As the Smailor guide writes it: GET /domains, confirm status and reputation.
    status, listed = await x.get("/v1/domains")
    assert status == 200, listed
    by_id = {d["id"]: d for d in listed["domains"]}
    assert set(by_id) == {calm["id"], loud["id"]} and listed["total"] == 2
    assert listed["next_cursor"] is None
    for dom in (calm, loud):
        status, one = await x.get(f"/v1/domains/{dom['id']}")
        assert status == 200, one
        assert by_id[dom["id"]]["reputation"] == one["reputation"]
        assert by_id[dom["id"]] == one  # the same object, field for field
    assert by_id[calm["id"]]["reputation"]["status"] == "healthy"
    loud_rep = by_id[loud["id"]]["reputation"]
    assert loud_rep["status"] == "blocked" and loud_rep["complaints"] == 3, loud_rep
    assert loud_rep["window_days"] == 30 and loud_rep["sent"] == 0
    # The same figures as the reputation endpoint.
    status, rep = await x.get(f"/v1/domains/{loud['id']}/reputation")
    assert status == 200
    assert rep == {"domain_id": loud["id"], "domain": loud["name"], **loud_rep}


async def test_the_domain_list_pages_by_cursor_within_account_and_restriction(
        api: Any) -> None:
    x = await tenant(api, "page-" + secrets.token_hex(3))
    y = await tenant(api, "page-" + secrets.token_hex(3))
    names = [_name(f"p{i}") for i in range(5)]
    mine = await _connect(x, *names)
    theirs = await _connect(y, _name("other"))

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        status, page = await x.get("/v1/domains", params=params)
        assert status == 200, page
        assert page["total"] == 5 and len(page["domains"]) <= 2
        assert all("reputation" in d for d in page["domains"])
        seen += [d["id"] for d in page["domains"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Every domain once. (One connect stores its names in one transaction: they share
    # created_at, and the id orders them.)
    assert sorted(seen) == sorted(d["id"] for d in mine) and len(set(seen)) == 5
    assert pages == 3
    # offset keeps working, and agrees with the cursor.
    status, page = await x.get("/v1/domains", params={"limit": 2, "offset": 2})
    assert [d["id"] for d in page["domains"]] == seen[2:4]

    # Another tenant's cursor is no key to anything: it pages within the caller's own.
    _, head = await x.get("/v1/domains", params={"limit": 1})
    status, other = await y.get("/v1/domains", params={"cursor": head["next_cursor"]})
    assert status == 200, other
    assert {d["id"] for d in other["domains"]} <= {theirs[0]["id"]}, other
    for bad in ("x", "WzEsImpvYnM6Y3JlYXRlZF9hdCIsW11d", "%00"):
        status, err = await x.get("/v1/domains", params={"cursor": bad})
        assert status == 400 and err["error"]["details"][0].startswith("cursor: "), err

    # A token restricted to two of the domains sees those two, and counts those two.
    status, tok = await x.post("/v1/auth/tokens", {"name": "two", "permissions": ["read"],
                                                   "domains": names[1:3]})
    assert status == 201, tok
    status, page = await x.with_token(tok["token"]).get("/v1/domains")
    assert status == 200, page
    assert page["total"] == 2 and sorted(d["name"] for d in page["domains"]) == \
        sorted(names[1:3])
    status, _ = await x.with_token(tok["token"]).get(f"/v1/domains/{mine[0]['id']}")
    assert status == 404


async def test_a_refused_dkim_rotation_changes_nothing(sandbox: Any, api: Any) -> None:
    dsn = sandbox.info["postgres_dsn"]
    x = await tenant(api, "rot-" + secrets.token_hex(3))
    y = await tenant(api, "rot-" + secrets.token_hex(3))
    (unset,) = await _connect(x, _name("unset"))
    (ready,) = await _connect(x, _name("ready"))
    status, setup = await x.post("/v1/domains/setup", {"domain": ready["name"]})
    assert status == 202, setup
    assert (await wait_job(x, setup["job_id"], timeout=30))["status"] == "completed"

    # Not set up: 404, and no keys made, no generation, no request, no job.
    before = await _row(dsn, unset["id"])
    status, err = await x.post(f"/v1/domains/{unset['id']}/dkim/rotate")
    assert status == 404 and err["error"]["code"] == "not_found", err
    assert await _row(dsn, unset["id"]) == before and before["keys"] == 0

    # Another tenant's domain, and a token of the owner restricted to another domain:
    # 404, and the domain is exactly as it was.
    before = await _row(dsn, ready["id"])
    status, _ = await y.post(f"/v1/domains/{ready['id']}/dkim/rotate")
    assert status == 404
    status, tok = await x.post("/v1/auth/tokens", {"name": "other", "permissions": ["write"],
                                                   "domains": [unset["name"]]})
    assert status == 201, tok
    status, _ = await x.with_token(tok["token"]).post(f"/v1/domains/{ready['id']}/dkim/rotate")
    assert status == 404
    assert await _row(dsn, ready["id"]) == before

    # The owner's rotation is accepted; the worker makes two new keys (one per
    # algorithm) and clears the request.
    status, job = await x.post(f"/v1/domains/{ready['id']}/dkim/rotate")
    assert status == 202 and job["domain_id"] == ready["id"], job
    assert (await wait_job(x, job["job_id"], timeout=30))["status"] == "completed"
    after = await _row(dsn, ready["id"])
    assert after["keys"] == before["keys"] + 2, (before, after)
    assert after["dkim_rotate_requested_at"] is None
    assert after["generation"] > before["generation"]


async def test_check_ns_names_the_setup_it_queues_and_only_for_the_owner(
        sandbox: Any, api: Any) -> None:
    dsn = sandbox.info["postgres_dsn"]
    x = await tenant(api, "ns-" + secrets.token_hex(3))
    y = await tenant(api, "ns-" + secrets.token_hex(3))
    (dom,) = await _connect(x, _name("ns"))
    before = await _row(dsn, dom["id"])

    # Another tenant, by name or by id: 404, nothing proven, nothing queued.
    for ref in (dom["name"], dom["id"]):
        status, err = await y.post("/v1/domains/check-ns", {"domain": ref})
        assert status == 404, err
    assert await _row(dsn, dom["id"]) == before

    # The owner (Winnr: "when verified is true, the domain is queued for provisioning").
    status, check = await x.post("/v1/domains/check-ns", {"domain": dom["name"]})
    assert status == 200 and check["verified"] is True, check
    assert check["setup_job_id"], check
    status, job = await x.get(f"/v1/jobs/{check['setup_job_id']}")
    assert status == 200 and job["type"] == "domain_setup", job
    assert (await wait_job(x, check["setup_job_id"], timeout=30))["status"] == "completed"
    _, got = await x.get(f"/v1/domains/{dom['id']}")
    assert got["status"] == "active" and got["ownership_verified"] is True, got
    # Set up already: a second check queues nothing.
    status, again = await x.post("/v1/domains/check-ns", {"domain": dom["id"]})
    assert status == 200 and again["verified"] is True and again["setup_job_id"] is None


async def test_domain_writes_of_another_tenant_are_404_and_change_nothing(
        sandbox: Any, api: Any) -> None:
    dsn = sandbox.info["postgres_dsn"]
    x = await tenant(api, "w-" + secrets.token_hex(3))
    y = await tenant(api, "w-" + secrets.token_hex(3))
    (dom,) = await _connect(x, _name("w"))
    before = await _row(dsn, dom["id"])
    for method, path, body in (
            ("POST", "/v1/domains/setup", {"domain": dom["id"]}),
            ("POST", "/v1/domains/setup", {"domain": dom["name"]}),
            ("DELETE", f"/v1/domains/{dom['id']}", None),
            ("GET", f"/v1/domains/{dom['id']}", None),
            ("GET", f"/v1/domains/{dom['id']}/dns-status", None)):
        status, err = await y.request(method, path, json=body)
        assert status == 404, (method, path, err)
    assert await _row(dsn, dom["id"]) == before
    _, listed = await y.get("/v1/domains")
    assert dom["id"] not in {d["id"] for d in listed["domains"]}


async def test_the_domain_page_counts_reputation_by_index_for_its_rows_only(
        sandbox: Any) -> None:
    """The page is cut first (account index, keyset order), then each of its rows'
    counts are index lookups: the cost follows the page, not the account's history."""
    from mailforge.store.queries import Q

    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + Q.list_domains_page, "acct_x", 51, 0, None, None, None, 30))
    finally:
        await conn.close()
    assert "domains_account_created_idx" in plan, plan
    assert "mail_send_counts_domain_day_idx" in plan, plan
    assert "mail_reputation_events_domain_idx" in plan, plan
    # The counts run per row of the cut page (below the Limit), not over every domain.
    assert plan.index("Limit") < plan.index("mail_send_counts_domain_day_idx"), plan

"""GET /v1/email-users paged by keyset cursor (issue 10, item 5): the pages walked with
``next_cursor`` are exactly the list paged by ``offset``, for every sort; a forged
cursor is a 400 on ``cursor`` and never shows another tenant's rows; ``total`` (from
the counter rows of migration 0011) equals a plain count after creations, deletions,
restores and suspensions, for every account in the database."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import orjson
import pytest
from support import ready_domain, tenant, wait_job

from mailforge.sandbox import Sandbox

pytestmark = pytest.mark.stack

SORTS = ["created_at", "-created_at", "email", "-email", "name", "-name", "status",
         "-status", "updated_at", "-updated_at"]


async def _walk(api: Any, sort: str, limit: int, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        q = {"limit": limit, "sort": sort, **params}
        if cursor:
            q["cursor"] = cursor
        status, page = await api.get("/v1/email-users", params=q)
        assert status == 200, page
        seen += [u["id"] for u in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert len(page["users"]) == limit


async def _by_offset(api: Any, sort: str, limit: int) -> list[str]:
    seen: list[str] = []
    offset = 0
    while True:
        status, page = await api.get("/v1/email-users", params={
            "limit": limit, "sort": sort, "offset": offset})
        assert status == 200, page
        seen += [u["id"] for u in page["users"]]
        if len(page["users"]) < limit:
            return seen
        offset += limit


async def _account_counts_match(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        wrong = await conn.fetch("""
            SELECT coalesce(c.account_id, m.account_id) AS account_id,
                   coalesce(c.status, m.status) AS status, c.n, m.n AS real
            FROM (SELECT account_id, status, sum(n) AS n FROM mailbox_counts
                  GROUP BY 1, 2 HAVING sum(n) <> 0) c
            FULL JOIN (SELECT account_id, status, count(*) AS n FROM mailboxes
                       GROUP BY 1, 2) m USING (account_id, status)
            WHERE c.n IS DISTINCT FROM m.n""")
    finally:
        await conn.close()
    assert [dict(r) for r in wrong] == []


async def test_cursor_pages_equal_offset_pages_and_total_is_exact(
        api: Any, sandbox: Sandbox, make_domain: Any) -> None:
    owner = await tenant(api, "keyset", email_user_limit=40)
    name = make_domain()
    await ready_domain(owner, name)
    users = [{"username": f"u{n:02d}", "name": f"User {n % 4}"} for n in range(23)]
    status, bulk = await owner.post("/v1/email-users/bulk", {"domain": name, "users": users})
    assert status == 202, bulk
    await wait_job(owner, bulk["job_id"])
    status, page = await owner.get("/v1/email-users", params={"limit": 5})
    assert status == 200 and page["total"] == 23 and page["next_cursor"]
    for sort in SORTS:
        walked = await _walk(owner, sort, 5)
        assert walked == await _by_offset(owner, sort, 5), sort
        assert len(walked) == len(set(walked)) == 23
    # offset still works, also on top of a cursor.
    status, first = await owner.get("/v1/email-users", params={"limit": 5})
    status, skip = await owner.get("/v1/email-users", params={
        "limit": 3, "offset": 2, "cursor": first["next_cursor"]})
    everything = await _walk(owner, "created_at", 50)
    assert [u["id"] for u in skip["users"]] == everything[7:10]
    # total follows deletions, restores and suspensions.
    ids = everything[:4]
    status, job = await owner.delete("/v1/email-users/bulk", json={"ids": ids[:3]})
    assert status == 202, job
    await wait_job(owner, job["job_id"])
    status, _ = await owner.post(f"/v1/email-users/{ids[0]}/restore", {})
    status, _ = await owner.patch(f"/v1/email-users/{ids[3]}", {"status": "suspended"})
    status, page = await owner.get("/v1/email-users", params={"limit": 1})
    assert page["total"] == 21
    for st in ("suspended", "deleted", "active"):
        status, page = await owner.get("/v1/email-users", params={"status": st,
                                                                  "limit": 100})
        assert status == 200 and page["total"] == len(page["users"]), st
    await _account_counts_match(sandbox.info["postgres_dsn"])


def _forge(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


async def test_forged_cursors_are_400_and_never_cross_tenants(
        api: Any, make_domain: Any) -> None:
    victim = await tenant(api, "keyset-victim")
    vname = make_domain()
    await ready_domain(victim, vname)
    status, bulk = await victim.post("/v1/email-users/bulk", {
        "domain": vname, "users": [{"username": f"v{n}"} for n in range(4)]})
    assert status == 202, bulk
    await wait_job(victim, bulk["job_id"])
    status, vpage = await victim.get("/v1/email-users", params={"limit": 2})
    assert vpage["next_cursor"]
    attacker = await tenant(api, "keyset-attacker")
    forged = [
        "not-a-cursor", "%%%", "A" * 600, _forge([1, "created_at", ["x", "y"]]),
        _forge([1, "created_at", ["2026-01-01T00:00:00", "usr_x"]]),  # no zone
        _forge([1, "created_at", [1, "usr_x"]]), _forge([1, "email", ["a", "b", "c"]]),
        _forge([1, "created_at", ["2026-01-01T00:00:00+00:00"]]), _forge({"a": 1}),
        _forge([2, "created_at", ["2026-01-01T00:00:00+00:00", "usr_x"]]),
        _forge([1, "created_at", ["2026-01-01T00:00:00+00:00", "usr\u0000x"]]),
        _forge([1, "created_at", ["99999-01-01T00:00:00+00:00", "usr_x"]]),
    ]
    for cursor in forged:
        status, err = await attacker.get("/v1/email-users", params={"cursor": cursor})
        assert status == 400, (cursor, err)
        assert any(d.startswith("cursor:") for d in err["error"]["details"]), err
    # A cursor of another sort is refused too.
    status, err = await victim.get("/v1/email-users", params={
        "cursor": vpage["next_cursor"], "sort": "email"})
    assert status == 400
    # The victim's own cursor, replayed by another tenant: only the attacker's rows.
    status, page = await attacker.get("/v1/email-users", params={
        "cursor": vpage["next_cursor"]})
    assert status == 200 and page["users"] == [] and page["total"] == 0
    # A cursor forged to start before everything: still only the attacker's rows.
    early = _forge([1, "created_at", ["1970-01-01T00:00:00+00:00", ""]])
    status, page = await attacker.get("/v1/email-users", params={"cursor": early})
    assert status == 200 and page["users"] == []

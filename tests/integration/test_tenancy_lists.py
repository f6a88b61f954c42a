"""Issue 10, item 6 (the contract's list rule) for the tenancy slice: ``GET /v1/jobs``
(the Winnr seed's batch view, ``/v1/jobs?limit=20``) and ``GET /v1/reseller/accounts``
carry ``total`` and ``next_cursor``; a cursor pages by keyset, ``offset`` keeps
working; a made-up or edited cursor is a 400 naming ``cursor``, never a 500; a cursor
never shows another tenant's rows, and a domain-restricted token's total counts its
domains only."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
from support import ready_domain

pytestmark = pytest.mark.stack


async def _reseller(api: Any, label: str) -> tuple[str, Any]:
    """A fresh reseller account (jobs of its own, none of other tests)."""
    status, body = await api.post("/v1/reseller/accounts", {
        "email": f"{label}-{secrets.token_hex(3)}@customers.example", "reseller": True,
        "domain_limit": 5, "email_user_limit": 10})
    assert status == 201, body
    return body["account_id"], api.with_token(body["token"])


async def _jobs(reseller: Any, count: int) -> list[str]:
    """*count* jobs in the reseller's account: suspending sub-accounts (no mailboxes, so
    each completes at once). Newest first, as the list answers."""
    made: list[str] = []
    for i in range(count):
        status, sub = await reseller.post("/v1/reseller/accounts", {
            "email": f"sub{i}-{secrets.token_hex(3)}@customers.example",
            "domain_limit": 1, "email_user_limit": 1})
        assert status == 201, sub
        status, sus = await reseller.post(f"/v1/reseller/accounts/{sub['account_id']}/suspend")
        assert status == 202, sus
        made.append(sus["job_id"])
    return made[::-1]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_jobs_list_carries_total_and_pages_by_cursor_and_offset(api: Any) -> None:
    _, r = await _reseller(api, "jobs-paging")
    made = await _jobs(r, 5)
    # The seed's request, as written.
    status, page = await r.get("/v1/jobs", params={"limit": 20})
    assert status == 200, page
    assert page["total"] == 5 and page["next_cursor"] is None and page["limit"] == 20
    assert [j["id"] for j in page["jobs"]] == made
    # Keyset: every job once, in order, and the last page says so.
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):
        status, page = await r.get("/v1/jobs", params=params)
        assert status == 200, page
        assert page["total"] == 5 and len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert seen == made
    # A job created meanwhile does not shift a cursor's page (an offset would).
    status, first = await r.get("/v1/jobs", params={"limit": 2})
    newer = await _jobs(r, 1)
    status, second = await r.get("/v1/jobs", params={"limit": 2,
                                                     "cursor": first["next_cursor"]})
    assert [j["id"] for j in second["jobs"]] == made[2:4] and second["total"] == 6
    # offset keeps working.
    status, page = await r.get("/v1/jobs", params={"limit": 2, "offset": 3})
    assert status == 200 and [j["id"] for j in page["jobs"]] == (newer + made)[3:5]
    assert page["offset"] == 3 and page["next_cursor"] is not None


async def test_forged_cursors_are_400_naming_cursor(api: Any) -> None:
    _, r = await _reseller(api, "jobs-forged")
    await _jobs(r, 3)
    status, page = await r.get("/v1/jobs", params={"limit": 1})
    good = page["next_cursor"]
    raw = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    status, audit = await api.get("/v1/audit", params={"limit": 1})
    assert audit["next_cursor"]
    forged = [
        "garbage!", "x" * 600, "%00", _b64(b"[1, 2, 3]"), _b64(b"{}"),
        # The right shape, wrong values: not a time, not a job id, too many values.
        _b64(json.dumps([raw[0], raw[1], ["yesterday", raw[2][1]]]).encode()),
        _b64(json.dumps([raw[0], raw[1], [raw[2][0], "usr_" + "0" * 20]]).encode()),
        _b64(json.dumps([raw[0], raw[1], [raw[2][0], raw[2][1], 1]]).encode()),
        _b64(json.dumps([raw[0], raw[1], [1, 2]]).encode()),
        # A cursor of another list.
        audit["next_cursor"],
    ]
    for cursor in forged:
        status, err = await r.get("/v1/jobs", params={"cursor": cursor})
        assert status == 400, (cursor, status, err)
        assert err["error"]["details"][0].startswith("cursor:"), err
    status, err = await r.get("/v1/reseller/accounts", params={"cursor": good})
    assert status == 400 and err["error"]["details"][0].startswith("cursor:"), err
    status, err = await api.get("/v1/audit", params={"cursor": good})
    assert status == 400 and err["error"]["details"][0].startswith("cursor:"), err


async def test_a_cursor_never_shows_another_tenants_jobs(api: Any) -> None:
    _, a = await _reseller(api, "jobs-a")
    _, b = await _reseller(api, "jobs-b")
    a_jobs = await _jobs(a, 3)
    b_jobs = await _jobs(b, 2)
    status, page = await a.get("/v1/jobs", params={"limit": 1})
    cursor = page["next_cursor"]
    # B replays A's cursor (and one positioned before everything): only B's own jobs.
    status, page = await b.get("/v1/jobs", params={"cursor": cursor})
    assert status == 200 and not set(j["id"] for j in page["jobs"]) & set(a_jobs)
    assert set(j["id"] for j in page["jobs"]) <= set(b_jobs) and page["total"] == 2
    far = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    data = json.loads(far)
    data[2] = ["2999-01-01T00:00:00+00:00", "job_" + "z" * 20]
    status, page = await b.get("/v1/jobs", params={"cursor": _b64(json.dumps(data).encode())})
    assert status == 200 and [j["id"] for j in page["jobs"]] == b_jobs
    assert page["total"] == 2


async def test_restricted_token_total_counts_its_domains_only(
        api: Any, make_domain: Any) -> None:
    _, r = await _reseller(api, "jobs-restricted")
    mine, other = make_domain(), make_domain()
    await ready_domain(r, mine)
    await ready_domain(r, other)
    status, tok = await r.post("/v1/auth/tokens", {"name": "one", "permissions": ["read"],
                                                   "domains": [mine]})
    assert status == 201, tok
    status, everything = await r.get("/v1/jobs", params={"limit": 500})
    restricted = api.with_token(tok["token"])
    status, page = await restricted.get("/v1/jobs", params={"limit": 500})
    assert status == 200, page
    assert page["total"] == len(page["jobs"]) >= 1 and page["next_cursor"] is None
    assert page["total"] < everything["total"]
    status, dom = await restricted.get("/v1/domains")
    mine_id = dom["domains"][0]["id"]
    assert {j["resource_id"] for j in page["jobs"]} == {mine_id}
    status, one = await restricted.get("/v1/jobs", params={"limit": 1})
    assert one["total"] == page["total"] and len(one["jobs"]) == 1


async def test_sub_account_list_pages_by_cursor(api: Any) -> None:
    _, r = await _reseller(api, "subs-paging")
    await _jobs(r, 3)  # three sub-accounts
    status, all_subs = await r.get("/v1/reseller/accounts")
    assert status == 200 and all_subs["total"] == 3 and all_subs["next_cursor"] is None
    ids = [a["id"] for a in all_subs["accounts"]]
    status, first = await r.get("/v1/reseller/accounts", params={"limit": 2})
    assert [a["id"] for a in first["accounts"]] == ids[:2] and first["next_cursor"]
    status, rest = await r.get("/v1/reseller/accounts",
                               params={"limit": 2, "cursor": first["next_cursor"]})
    assert [a["id"] for a in rest["accounts"]] == ids[2:] and rest["next_cursor"] is None
    # A sibling reseller replaying it sees none of these accounts.
    _, other = await _reseller(api, "subs-other")
    status, page = await other.get("/v1/reseller/accounts",
                                   params={"cursor": first["next_cursor"]})
    assert status == 200 and page["accounts"] == [] and page["total"] == 0

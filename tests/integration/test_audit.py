"""Issue 5: the audit log records every successful write (who, what, when, from where,
a summary without secrets), is readable with filters and paging, and is append-only
in the store."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest
from support import ready_domain

pytestmark = pytest.mark.stack


async def _customer(api: Any) -> tuple[str, Any, str]:
    status, body = await api.post("/v1/reseller/accounts", {
        "email": f"audit-{secrets.token_hex(3)}@customers.example",
        "domain_limit": 3, "email_user_limit": 10})
    assert status == 201, body
    return body["account_id"], api.with_token(body["token"]), body["token_id"]


async def test_writes_are_audited_without_secrets(api: Any, unique_domain: str) -> None:
    acct, client, token_id = await _customer(api)
    await ready_domain(client, unique_domain)
    pw = "Audit-secret-" + secrets.token_hex(8)
    status, user = await client.post("/v1/email-users", {
        "domain": unique_domain, "username": "audited", "name": "A", "password": pw})
    assert status == 202
    # Reads and refused writes are not recorded.
    await client.get("/v1/domains")
    assert (await client.post("/v1/email-users", {"domain": unique_domain}))[0] == 400
    # The operator acting for the customer is recorded as the actor.
    status, tok = await api.post("/v1/auth/tokens", {"name": "by-parent",
                                                     "permissions": ["read"]},
                                 headers={"X-Mailforge-Account": acct})
    assert status == 201

    status, page = await client.get("/v1/audit")
    assert status == 200, page
    events = page["events"]
    actions = [e["action"] for e in events]
    assert actions == ["tokens.create_token", "email_users.create", "domains.setup",
                       "domains.connect"], actions
    created = events[1]
    assert created["token_id"] == token_id and created["account_id"] == acct
    assert created["actor_account_id"] == acct
    assert created["resource_id"] == user["id"]
    assert created["method"] == "POST" and created["route"] == "/v1/email-users"
    assert created["status"] == 202 and created["client_addr"] == "127.0.0.1"
    assert created["summary"]["request"]["password"] == "[redacted]"
    assert created["summary"]["request"]["username"] == "audited"
    by_parent = events[0]
    assert by_parent["account_id"] == acct and by_parent["actor_account_id"] != acct
    assert by_parent["resource_id"] == tok["id"]
    text = str(page)
    assert pw not in text and tok["token"] not in text

    # Filters and cursor paging.
    status, only = await client.get("/v1/audit", params={"action": "domains.connect"})
    assert [e["action"] for e in only["events"]] == ["domains.connect"]
    status, only = await client.get("/v1/audit", params={"resource_id": user["id"]})
    assert [e["id"] for e in only["events"]] == [created["id"]]
    seen = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        status, pg = await client.get("/v1/audit", params=params)
        assert status == 200
        seen += [e["id"] for e in pg["events"]]
        if not pg["next_cursor"]:
            break
        params = {"limit": 3, "cursor": pg["next_cursor"]}
    assert seen == [e["id"] for e in events]
    status, err = await client.get("/v1/audit", params={"cursor": "garbage!"})
    assert status == 400 and err["error"]["details"][0].startswith("cursor:")
    # Another tenant sees none of it.
    _, other, _ = await _customer(api)
    status, page = await other.get("/v1/audit")
    assert page["events"] == []


async def test_audit_log_is_append_only_in_the_store(sandbox: Any, api: Any) -> None:
    await _customer(api)  # at least one event exists
    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        before = await conn.fetchval("SELECT count(*) FROM audit_log")
        assert before > 0
        for sql in ("UPDATE audit_log SET action = 'forged'",
                    "DELETE FROM audit_log",
                    "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == before
        assert await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'forged'") == 0
    finally:
        await conn.close()

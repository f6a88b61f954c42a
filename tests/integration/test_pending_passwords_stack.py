"""Issue 11 against the real stack: passwords hashed by the reconcile pass (chosen ones
with the slow scheme, generated ones with the fast one) log in over IMAP; once
converged no sealed value is left and no password is anywhere in the database in
clear; a password change takes over from the old one; parallel single and bulk creates
against a limit create exactly up to it and refuse the rest with used/limit/requested."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import pytest
from support import imap_login_ok, ready_domain, tenant, wait_job

pytestmark = pytest.mark.stack


async def _database_holds(dsn: str, needles: list[str]) -> list[str]:
    """Tables of the database whose rows contain any of *needles* (as text, or as the
    hex of its bytes, which is how a bytea column reads as text)."""
    conn = await asyncpg.connect(dsn)
    try:
        found = []
        for t in [r["tablename"] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]:
            for n in needles:
                if await conn.fetchval(
                        f'SELECT EXISTS (SELECT 1 FROM "{t}" x WHERE x::text LIKE $1 '
                        f"OR x::text LIKE $2)", f"%{n}%", f"%{n.encode().hex()}%"):
                    found.append(t)
        return found
    finally:
        await conn.close()


async def test_bulk_passwords_hashed_by_the_worker_log_in(sandbox: Any, api: Any,
                                                          unique_domain: str) -> None:
    info = sandbox.info
    imap = (info["imap"]["host"], info["imap"]["port"])
    await ready_domain(api, unique_domain)
    chosen = {f"c{n}": f"Chosen-{secrets.token_hex(8)}" for n in range(5)}
    users = [{"username": u, "password": p} for u, p in chosen.items()]
    users += [{"username": f"g{n}"} for n in range(5)]
    status, body = await api.post("/v1/email-users/bulk",
                                  {"domain": unique_domain, "users": users})
    assert status == 202, body
    job = await wait_job(api, body["job_id"], timeout=30)
    assert job["status"] == "completed", job
    generated = {u["username"]: u["password"] for u in job["users"] if "password" in u}
    assert sorted(generated) == [f"g{n}" for n in range(5)]
    creds = {**chosen, **generated}
    for user, pw in creds.items():
        assert await asyncio.to_thread(imap_login_ok, *imap, f"{user}@{unique_domain}", pw)

    conn = await asyncpg.connect(info["postgres_dsn"])
    try:
        rows = await conn.fetch(
            "SELECT local_part, password_hash, pending_password FROM mailboxes m "
            "JOIN domains d ON d.id = m.domain_id WHERE d.name = $1", unique_domain)
    finally:
        await conn.close()
    assert len(rows) == 10 and all(r["pending_password"] is None for r in rows)
    schemes = {r["local_part"]: r["password_hash"].split("}")[0] + "}" for r in rows}
    assert {schemes[u] for u in chosen} == {"{SHA512-CRYPT}"}
    assert {schemes[u] for u in generated} == {"{SSHA512}"}
    # Nowhere in the database in clear (the job keeps generated ones sealed).
    assert await _database_holds(info["postgres_dsn"], list(creds.values())) == []

    # A password change: the new one logs in once its job completed, the old one not.
    _, u = await api.get("/v1/email-users", params={"search": f"c0@{unique_domain}"})
    mid = u["users"][0]["id"]
    new = f"Changed-{secrets.token_hex(8)}"
    status, ch = await api.patch(f"/v1/email-users/{mid}", {"password": new})
    assert status == 200, ch
    assert (await wait_job(api, ch["job_id"]))["status"] == "completed"
    assert await asyncio.to_thread(imap_login_ok, *imap, f"c0@{unique_domain}", new)
    assert not await asyncio.to_thread(imap_login_ok, *imap, f"c0@{unique_domain}",
                                       chosen["c0"])
    assert await _database_holds(info["postgres_dsn"], [new]) == []


async def test_parallel_singles_and_bulks_stop_exactly_at_the_limit(
        api: Any, unique_domain: str) -> None:
    limited = await tenant(api, f"lim11-{unique_domain}", domain_limit=2,
                           email_user_limit=9)
    await ready_domain(limited, unique_domain)
    calls = [limited.post("/v1/email-users", {"domain": unique_domain,
                                              "username": f"s{n}"}) for n in range(10)]
    calls += [limited.post("/v1/email-users/bulk", {
        "domain": unique_domain, "users": [{"username": f"b{n}x{k}"} for k in range(3)]})
        for n in range(3)]
    results = await asyncio.gather(*calls)
    made = sum(1 if "users_count" not in b else b["users_count"]
               for s, b in results if s == 202)
    refused = [b["error"] for s, b in results if s == 403]
    assert {s for s, _ in results} <= {202, 403}
    assert 7 <= made <= 9 and refused, results  # never past the limit
    for err in refused:
        assert err["code"] == "limit_exceeded" and err["limit"] == 9
        assert err["used"] + err["requested"] > 9 and err["used"] <= 9
    _, listing = await limited.get("/v1/email-users")
    assert listing["total"] == made
    _, usage = await limited.get("/v1/account/usage")
    assert usage["email_users"] == {"used": made, "limit": 9}

"""Rows for tests on a per-test database (tests/db/conftest.py): accounts, domains,
mailboxes, aliases, jobs, and the intent changes the API would make.

Rows are inserted directly, as the API would leave them once its transaction
committed (a domain set up and, unless said otherwise, its name proven), so engine and
store tests do not depend on the request path. Jobs go through ``store.jobs.insert``,
the one code path that creates them.
"""

from __future__ import annotations

import secrets
from typing import Any

from mailforge import ids
from mailforge.store.store import Store

Conn = Any  # an asyncpg connection (pooled or not)


def name() -> str:
    """A fresh domain name, e.g. ``t3f9a1c2b7d.test``."""
    return f"t{secrets.token_hex(5)}.test"


async def account(conn: Conn, status: str = "active") -> str:
    acct = ids.new_id("acct")
    await conn.execute(
        "INSERT INTO accounts (id, name, status, domain_limit, email_user_limit) "
        "VALUES ($1, $2, $3, 1000, 100000)", acct, f"test {acct}", status)
    return acct


async def domain(conn: Conn, account_id: str, domain_name: str | None = None, *,
                 mail_host: str = "test-host", backend_enabled: bool = True,
                 verified: bool = True, alias_of: str | None = None) -> str:
    """A domain to converge (generation 1, never observed). *verified*: its name is
    proven (``ownership_verified_at`` set), so the backend serves it."""
    did = ids.new_id("dom")
    n = domain_name or name()
    await conn.execute(
        "INSERT INTO domains (id, account_id, name, unicode_name, mail_host, "
        "backend_enabled, ownership_verified_at, alias_of) "
        "VALUES ($1, $2, $3, $3, $4, $5, CASE WHEN $6 THEN now() END, $7)",
        did, account_id, n, mail_host, backend_enabled, verified, alias_of)
    return did


async def mailbox(conn: Conn, account_id: str, domain_id: str, local_part: str) -> str:
    mid = ids.new_id("usr")
    await conn.execute(
        "INSERT INTO mailboxes (id, account_id, domain_id, local_part, address, "
        "password_hash, quota_mb) "
        "SELECT $1, $2, $3, $4, $4 || '@' || d.name, '{PLAIN}unused', 1024 "
        "FROM domains d WHERE d.id = $3", mid, account_id, domain_id, local_part)
    return mid


async def alias(conn: Conn, account_id: str, domain_id: str, local_part: str,
                targets: list[str]) -> str:
    aid = ids.new_id("ali")
    await conn.execute(
        "INSERT INTO aliases (id, account_id, domain_id, address, targets) "
        "SELECT $1, $2, $3, $4 || '@' || d.name, $5 FROM domains d WHERE d.id = $3",
        aid, account_id, domain_id, local_part, targets)
    return aid


async def job(store: Store, account_id: str, objects: list[tuple[str, str]],
              job_type: str = "test") -> str:
    """A job waiting for (kind, id) objects at their current generation."""
    async with store.tx() as conn:
        items = []
        for kind, oid in objects:
            table = {"domain": "domains", "mailbox": "mailboxes", "alias": "aliases"}[kind]
            gen = await conn.fetchval(f"SELECT generation FROM {table} WHERE id = $1", oid)
            items.append((kind, oid, int(gen)))
        return (await store.jobs.insert(conn, account_id, job_type, None, items)).id


async def change_mailbox(conn: Conn, mailbox_id: str, **columns: Any) -> int:
    """A change of intent, as the API makes it: the new values, the generation bumped,
    the domain due now (attempts reset). Returns the new generation."""
    sets = "".join(f", {col} = ${i}" for i, col in enumerate(columns, start=2))
    gen = await conn.fetchval(
        f"UPDATE mailboxes SET generation = generation + 1{sets} WHERE id = $1 "
        "RETURNING generation", mailbox_id, *columns.values())
    await conn.execute(
        "UPDATE domains SET attempts = 0, next_attempt_at = now() "
        "WHERE id = (SELECT domain_id FROM mailboxes WHERE id = $1)", mailbox_id)
    return int(gen)


async def change_domain(conn: Conn, domain_id: str, **columns: Any) -> int:
    """A change of the domain's own intent (e.g. ``deleted=True``); see change_mailbox."""
    sets = "".join(f", {col} = ${i}" for i, col in enumerate(columns, start=2))
    gen = await conn.fetchval(
        f"UPDATE domains SET generation = generation + 1, attempts = 0, "
        f"next_attempt_at = now(){sets} WHERE id = $1 RETURNING generation",
        domain_id, *columns.values())
    return int(gen)


async def row(conn: Conn, table: str, oid: str) -> dict[str, Any]:
    """The row of *table* with id *oid*, as a dict (empty if none)."""
    r = await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1", oid)
    return dict(r) if r is not None else {}


async def job_items(conn: Conn, job_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        "SELECT object_kind, object_id, target_generation, state, error FROM job_items "
        "WHERE job_id = $1 ORDER BY seq", job_id)]


async def expire_leases(conn: Conn) -> None:
    """Every lease runs out now (what waiting ``lease_seconds`` would do)."""
    await conn.execute("UPDATE domains SET lease_until = now() - interval '1 second' "
                       "WHERE lease_until IS NOT NULL")


async def due_now(conn: Conn) -> None:
    """Every scheduled retry is due now (what waiting out the backoff would do)."""
    await conn.execute("UPDATE domains SET next_attempt_at = now() "
                       "WHERE next_attempt_at > now() AND next_attempt_at < 'infinity'")

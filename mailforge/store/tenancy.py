"""Store functions for tenancy: authentication of tokens, token management, the
account tree (reseller sub-accounts), suspension and deletion of accounts, usage.

Every function about a sub-account takes the parent's id and every query filters on
it, so a reseller reaches its own children and nothing else.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from .. import ids
from ..errors import Conflict, NotFound, Unprocessable
from ..models import Job, Principal, from_record
from .queries import Q
from .store import Store, hash_secret, split_token
from .tokencache import Entry, TokenCache

# How often a token's last_used_at is written (at most once a minute per token).
TOUCH_SECONDS = 60.0


@dataclass(frozen=True)
class AuthResult:
    """What ``authenticate`` learnt: a principal, or why there is none (for logs)."""

    principal: Principal | None
    reason: str = ""


async def authenticate(store: Store, token: str,
                       cache: TokenCache | None = None) -> AuthResult:
    """Check a bearer token against its stored hash (constant-time compare).

    With *cache*, a token that authenticated in the last few seconds is answered from
    memory (the secret still checked against the stored hash, the expiry against the
    clock); see ``store/tokencache.py`` for why that is safe. Only successes are cached.
    """
    parts = split_token(token)
    if parts is None:
        return AuthResult(None, "malformed")
    tid, secret = parts
    digest = hash_secret(secret)
    if cache is not None:
        hit = cache.get(tid)
        if hit is not None:
            if not hmac.compare_digest(hit.secret_hash, digest):
                return AuthResult(None, "mismatch")
            if hit.expires_at is not None and hit.expires_at <= time.time():
                cache.drop(tid)
                return AuthResult(None, "expired")
            now = time.monotonic()
            if now - hit.touched >= TOUCH_SECONDS:
                # Recording every use would make each request a write; a minute is enough.
                cache.put(tid, dataclasses.replace(hit, touched=now), cache.generation)
                async with store.pool.acquire() as conn:
                    await conn.execute(Q.touch_token, tid)
            return AuthResult(hit.principal)
    generation = cache.generation if cache is not None else 0
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.auth_token, tid)
        if row is None:
            hmac.compare_digest(digest, b"\0" * 32)  # same work either way
            return AuthResult(None, "unknown")
        if not hmac.compare_digest(bytes(row["secret_hash"]), digest):
            return AuthResult(None, "mismatch")
        if row["revoked"]:
            return AuthResult(None, "revoked")
        if row["expired"]:
            return AuthResult(None, "expired")
        if row["account_status"] == "deleting":
            return AuthResult(None, "account deleted")
        if row["stale"]:
            await conn.execute(Q.touch_token, tid)
    doms = frozenset(row["domains"]) if row["domains"] is not None else None
    principal = Principal(token_id=tid, account_id=row["account_id"],
                          permissions=frozenset(row["permissions"]), domains=doms,
                          account_status=row["account_status"], reseller=row["reseller"])
    if cache is not None:
        now = time.monotonic()
        cache.put(tid, Entry(bytes(row["secret_hash"]), principal, row["expires_epoch"], now,
                             now), generation)
    return AuthResult(principal)


async def descendant(store: Store, ancestor_id: str, account_id: str) -> asyncpg.Record | None:
    """The account *account_id* if it lies below *ancestor_id* in the account tree."""
    async with store.pool.acquire() as conn:
        return await conn.fetchrow(Q.descendant_account, ancestor_id, account_id)


async def object_allowed(store: Store, account_id: str, object_id: str,
                         domains: frozenset[str]) -> bool:
    """Is the domain, mailbox, alias or job *object_id* of the account within *domains*?
    Ids of other kinds are not domain objects: allowed here (their handlers decide)."""
    kind = object_id.split("_", 1)[0]
    if kind in ("dom", "usr", "ali", "job") and not ids.has_prefix(object_id, kind):
        return False  # malformed: no such object (and NUL never reaches SQL)
    async with store.pool.acquire() as conn:
        if object_id.startswith(("dom_", "usr_", "ali_")):
            name = await conn.fetchval(Q.domain_of_object, object_id, account_id)
            return name is not None and name in domains
        if object_id.startswith("job_"):
            return bool(await conn.fetchval(Q.job_in_domains, object_id, sorted(domains)))
    return True


# ---------------------------------------------------------------------------- tokens

async def list_tokens(store: Store, account_id: str) -> list[dict[str, Any]]:
    async with store.pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(Q.list_tokens, account_id)]


async def get_token(store: Store, account_id: str, token_id: str) -> dict[str, Any]:
    if not ids.has_prefix(token_id, "tok"):
        raise NotFound("token")
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.get_token_meta, account_id, token_id)
    if row is None:
        raise NotFound("token")
    return dict(row)


async def revoke_token(store: Store, account_id: str, token_id: str) -> None:
    if not ids.has_prefix(token_id, "tok"):
        raise NotFound("token")
    async with store.pool.acquire() as conn:
        if await conn.fetchval(Q.revoke_token, account_id, token_id) is None:
            raise NotFound("token")


# -------------------------------------------------------------------------- accounts

async def get_account(store: Store, account_id: str) -> dict[str, Any]:
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.get_account, account_id)
    if row is None:
        raise NotFound("account")
    return dict(row)


async def usage(store: Store, account_id: str) -> dict[str, int]:
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.account_usage, account_id)
    assert row is not None
    return {k: int(v) for k, v in row.items()}


@dataclass(frozen=True)
class SubAccountInput:
    email: str
    first_name: str
    last_name: str
    company_name: str
    domain_limit: int
    email_user_limit: int
    reseller: bool = False

    @property
    def name(self) -> str:
        return self.company_name or f"{self.first_name} {self.last_name}".strip() or self.email


def _check_limits(parent: asyncpg.Record, item: SubAccountInput) -> None:
    # A reseller cannot hand out more than it has itself.
    errs = []
    if item.domain_limit > parent["domain_limit"]:
        errs.append(f"domain_limit: must not exceed your own limit ({parent['domain_limit']})")
    if item.email_user_limit > parent["email_user_limit"]:
        errs.append("email_user_limit: must not exceed your own limit "
                    f"({parent['email_user_limit']})")
    if errs:
        raise Unprocessable("limit_exceeded", "A limit exceeds the reseller's own.", errs)


async def create_sub_account(store: Store, parent_id: str, item: SubAccountInput,
                             minted_by: str | None = None
                             ) -> tuple[dict[str, Any], str, str]:
    """Create a sub-account and its first admin token; returns (account, token id, token).
    The first token is minted by *minted_by* (the creating token): revoked with it, and
    never outliving it."""
    async with store.pool.acquire() as conn, conn.transaction():
        parent = await conn.fetchrow(Q.lock_account, parent_id)
        if parent is None:
            raise NotFound("account")
        _check_limits(parent, item)
        row = await conn.fetchrow(Q.insert_sub_account, ids.new_id("acct"), item.name,
                                  item.email, parent_id, item.domain_limit,
                                  item.email_user_limit, item.reseller, item.first_name,
                                  item.last_name, item.company_name)
        assert row is not None
        # In the same transaction: never an account without its first token.
        tid, token, _ = await store._insert_token(conn, row["id"], "initial admin token",
                                                  ["admin"], None, None, minted_by)
    return dict(row), tid, token


async def list_sub_accounts(store: Store, parent_id: str, limit: int,
                            offset: int) -> tuple[list[dict[str, Any]], int]:
    async with store.pool.acquire() as conn:
        await conn.execute(Q.finish_deleted_accounts, parent_id)
        rows = await conn.fetch(Q.list_sub_accounts, parent_id, limit, offset)
        total = rows[0]["total_count"] if rows else await conn.fetchval(
            Q.count_sub_accounts, parent_id)
    return [dict(r) for r in rows], int(total)


async def get_sub_account(store: Store, parent_id: str, account_id: str) -> dict[str, Any]:
    if not ids.has_prefix(account_id, "acct"):
        raise NotFound("account")
    async with store.pool.acquire() as conn:
        await conn.execute(Q.finish_deleted_accounts, parent_id)
        row = await conn.fetchrow(Q.get_sub_account, parent_id, account_id)
    if row is None:
        raise NotFound("account")
    return dict(row)


async def update_sub_account(store: Store, parent_id: str, account_id: str,
                             changes: dict[str, Any]) -> dict[str, Any]:
    if not ids.has_prefix(account_id, "acct"):
        raise NotFound("account")
    async with store.pool.acquire() as conn, conn.transaction():
        cur = await conn.fetchrow(Q.lock_sub_account, parent_id, account_id)
        if cur is None or cur["status"] == "deleting":
            raise NotFound("account")
        parent = await conn.fetchrow(Q.get_account, parent_id)
        assert parent is not None
        merged = SubAccountInput(
            email=changes.get("email", cur["email"] or ""),
            first_name=changes.get("first_name", cur["first_name"]),
            last_name=changes.get("last_name", cur["last_name"]),
            company_name=changes.get("company_name", cur["company_name"]),
            domain_limit=changes.get("domain_limit", cur["domain_limit"]),
            email_user_limit=changes.get("email_user_limit", cur["email_user_limit"]))
        _check_limits(parent, merged)
        row = await conn.fetchrow(Q.update_sub_account, parent_id, account_id, merged.email,
                                  merged.first_name, merged.last_name, merged.company_name,
                                  merged.name, merged.domain_limit, merged.email_user_limit)
        assert row is not None
    return dict(row)


async def set_suspended(store: Store, parent_id: str, account_id: str,
                        suspended: bool) -> tuple[dict[str, Any], Job]:
    """Suspend or unsuspend a sub-account. Every mailbox of it is re-rendered (login
    refused or allowed again); nothing is deleted. The job (in the parent's account)
    completes when the backend holds the new state."""
    if not ids.has_prefix(account_id, "acct"):
        raise NotFound("account")
    async with store.pool.acquire() as conn, conn.transaction():
        cur = await conn.fetchrow(Q.lock_sub_account, parent_id, account_id)
        if cur is None or cur["status"] == "deleting":
            raise NotFound("account")
        await conn.execute(Q.set_account_status, account_id,
                           "suspended" if suspended else "active")
        bumped = await conn.fetch(Q.bump_account_mailboxes, account_id)
        await conn.execute(Q.wake_account_domains, account_id)
        job = await store._insert_job(
            conn, parent_id, "account_suspend" if suspended else "account_unsuspend",
            account_id, [("mailbox", r["id"], r["generation"]) for r in bumped])
        if not bumped:
            job = from_record(Job, await conn.fetchrow(Q.complete_empty_job, job.id))
        for host in await conn.fetch(Q.account_mail_hosts, account_id):
            await conn.execute(Q.notify_work, host["mail_host"])
        row = await conn.fetchrow(Q.get_account, account_id)
        assert row is not None
    return dict(row), job


async def delete_sub_account(store: Store, parent_id: str, account_id: str) -> Job:
    """Start deleting a sub-account: its tokens stop at once; its domains, mailboxes and
    aliases are converged away by the engine; the account row goes when they are gone."""
    if not ids.has_prefix(account_id, "acct"):
        raise NotFound("account")
    async with store.pool.acquire() as conn, conn.transaction():
        cur = await conn.fetchrow(Q.lock_sub_account, parent_id, account_id)
        if cur is None or cur["status"] == "deleting":
            raise NotFound("account")
        if await conn.fetchval(Q.count_sub_accounts, account_id):
            raise Conflict("account_has_sub_accounts",
                           "Delete the account's own sub-accounts first.")
        await conn.execute(Q.set_account_status, account_id, "deleting")
        await conn.execute(Q.revoke_account_tokens, account_id)
        await conn.execute(Q.delete_account_mailboxes, account_id)
        await conn.execute(Q.delete_account_aliases, account_id)
        doms = await conn.fetch(Q.delete_account_domains, account_id)
        job = await store._insert_job(conn, parent_id, "account_delete", account_id,
                                      [("domain", r["id"], r["generation"]) for r in doms])
        if not doms:
            job = from_record(Job, await conn.fetchrow(Q.complete_empty_job, job.id))
        for host in {r["mail_host"] for r in doms}:
            await conn.execute(Q.notify_work, host)
    return job


async def reseller_usage(store: Store, parent_id: str) -> list[dict[str, Any]]:
    async with store.pool.acquire() as conn:
        await conn.execute(Q.finish_deleted_accounts, parent_id)
        return [dict(r) for r in await conn.fetch(Q.reseller_usage, parent_id)]


async def create_token(store: Store, account_id: str, name: str, permissions: Sequence[str],
                       domains: Sequence[str] | None,
                       expires_at: Any, minted_by: str | None = None
                       ) -> tuple[dict[str, Any], str]:
    """A token of the account; a domain restriction may name only the account's own
    domains (400 naming ``domains[i]``, checked in the insert's transaction). A token
    minted by another (*minted_by*) never outlives it and is revoked with it."""
    tid, token, _ = await store.create_owned_token(account_id, name, permissions, domains,
                                                   expires_at, minted_by)
    return await get_token(store, account_id, tid), token

"""Accounts: the operator's root account and the tree of sub-accounts below it
(resellers), their limits, usage, suspension and deletion.

Every method about a sub-account takes the parent's id and every query filters on it,
so a reseller reaches its own children and nothing else. Jobs and first tokens are
written on the same transaction as the change they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import ids
from ..errors import Conflict, NotFound, Unprocessable
from ..models import Job, from_record
from .db import Database, Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn
    from .jobs import Jobs
    from .tokens import Tokens

# pg_advisory_xact_lock(ROOT_ACCOUNT_LOCK): concurrent first starts create one root.
ROOT_ACCOUNT_LOCK = 7270001


@dataclass(frozen=True)
class AccountInfo:
    """An account as the API and the CLI show it."""

    id: str
    name: str
    email: str | None
    first_name: str
    last_name: str
    company_name: str
    status: str
    # May it create sub-accounts (the root account always may)?
    reseller: bool
    domain_limit: int
    email_user_limit: int
    parent_id: str | None
    created_at: datetime


def _account(row: Any) -> AccountInfo:
    return AccountInfo(
        id=row["id"], name=row["name"], email=row["email"], first_name=row["first_name"],
        last_name=row["last_name"], company_name=row["company_name"], status=row["status"],
        reseller=bool(row["reseller"] or row["parent_id"] is None),
        domain_limit=row["domain_limit"], email_user_limit=row["email_user_limit"],
        parent_id=row["parent_id"], created_at=row["created_at"])


@dataclass(frozen=True)
class Usage:
    """What an account uses (counts of live objects)."""

    domains: int
    email_users: int
    aliases: int
    tokens: int
    sub_accounts: int


@dataclass(frozen=True)
class SubAccountUsage:
    """One sub-account in the reseller's usage report."""

    id: str
    name: str
    status: str
    domain_limit: int
    email_user_limit: int
    domains: int
    email_users: int


@dataclass(frozen=True)
class ActingTarget:
    """An account below the caller's, which the caller may act for."""

    id: str
    status: str
    reseller: bool


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


@dataclass(frozen=True)
class SubAccountChanges:
    """The fields a PATCH changes; None: left as it is."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None
    domain_limit: int | None = None
    email_user_limit: int | None = None


def _check_limits(parent: Any, item: SubAccountInput) -> None:
    # A reseller cannot hand out more than it has itself.
    errs = []
    if item.domain_limit > parent["domain_limit"]:
        errs.append(f"domain_limit: must not exceed your own limit ({parent['domain_limit']})")
    if item.email_user_limit > parent["email_user_limit"]:
        errs.append("email_user_limit: must not exceed your own limit "
                    f"({parent['email_user_limit']})")
    if errs:
        raise Unprocessable("limit_exceeded", "A limit exceeds the reseller's own.", errs)


class Accounts(Repository):
    def __init__(self, db: Database, jobs: Jobs, tokens: Tokens) -> None:
        super().__init__(db)
        self.jobs = jobs
        self.tokens = tokens

    async def ensure_root(self, name: str = "operator", domain_limit: int = 1_000_000,
                          email_user_limit: int = 10_000_000) -> str:
        """The id of the operator's root account, created on first use."""
        async with self.db.tx() as conn:
            # Serialise concurrent first starts so there is exactly one root account.
            await conn.execute(Q.lock_root_account, ROOT_ACCOUNT_LOCK)
            row = await conn.fetchrow(Q.root_account)
            if row:
                return str(row["id"])
            acct = ids.new_id("acct")
            await conn.execute(Q.insert_account, acct, name, None, None, domain_limit,
                               email_user_limit)
            return acct

    async def get(self, account_id: str) -> AccountInfo:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_account, account_id)
        if row is None:
            raise NotFound("account")
        return _account(row)

    async def usage(self, account_id: str) -> tuple[AccountInfo, Usage]:
        """The account and what it uses, read in one statement."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.account_with_usage, account_id)
        if row is None:
            raise NotFound("account")
        return _account(row), Usage(domains=int(row["used_domains"]),
                                    email_users=int(row["used_email_users"]),
                                    aliases=int(row["used_aliases"]),
                                    tokens=int(row["used_tokens"]),
                                    sub_accounts=int(row["used_sub_accounts"]))

    async def descendant(self, ancestor_id: str, account_id: str) -> ActingTarget | None:
        """The account *account_id* if it lies below *ancestor_id* in the account tree."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.descendant_account, ancestor_id, account_id)
        if row is None:
            return None
        return ActingTarget(id=row["id"], status=row["status"], reseller=row["reseller"])

    async def create_sub(self, parent_id: str, item: SubAccountInput,
                         minted_by: str | None = None) -> tuple[AccountInfo, str, str]:
        """Create a sub-account and its first admin token; returns (account, token id,
        token). The first token is minted by *minted_by* (the creating token): revoked
        with it, and never outliving it."""
        async with self.db.tx() as conn:
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
            tid, token, _ = await self.tokens.insert(conn, row["id"], "initial admin token",
                                                     ["admin"], None, None, minted_by)
        return _account(row), tid, token

    async def list_sub(self, parent_id: str, limit: int, offset: int,
                       after: tuple[datetime, str] | None = None
                       ) -> tuple[list[AccountInfo], int, tuple[datetime, str] | None]:
        """Oldest first: *limit* sub-accounts after position *after* (keyset: the
        (created_at, id) of the last one of the previous page) and *offset*; the number
        of sub-accounts; where the next page starts (None: this is the last)."""
        after_at, after_id = after if after is not None else (None, None)
        async with self.pool.acquire() as conn:
            await conn.execute(Q.finish_deleted_accounts, parent_id)
            # One more than asked: whether a next page exists.
            rows = await conn.fetch(Q.list_sub_accounts, parent_id, limit + 1, offset,
                                    after_at, after_id)
            total = await conn.fetchval(Q.count_sub_accounts, parent_id)
        accounts = [_account(r) for r in rows[:limit]]
        nxt = ((accounts[-1].created_at, accounts[-1].id)
               if len(rows) > limit and accounts else None)
        return accounts, int(total), nxt

    async def get_sub(self, parent_id: str, account_id: str) -> AccountInfo:
        if not ids.has_prefix(account_id, "acct"):
            raise NotFound("account")
        async with self.pool.acquire() as conn:
            await conn.execute(Q.finish_deleted_accounts, parent_id)
            row = await conn.fetchrow(Q.get_sub_account, parent_id, account_id)
        if row is None:
            raise NotFound("account")
        return _account(row)

    async def update_sub(self, parent_id: str, account_id: str,
                         changes: SubAccountChanges) -> AccountInfo:
        if not ids.has_prefix(account_id, "acct"):
            raise NotFound("account")
        async with self.db.tx() as conn:
            cur = await _lock_sub(conn, parent_id, account_id)
            parent = await conn.fetchrow(Q.get_account, parent_id)
            assert parent is not None

            def pick(new: Any, old: Any) -> Any:
                return old if new is None else new

            merged = SubAccountInput(
                email=pick(changes.email, cur["email"] or ""),
                first_name=pick(changes.first_name, cur["first_name"]),
                last_name=pick(changes.last_name, cur["last_name"]),
                company_name=pick(changes.company_name, cur["company_name"]),
                domain_limit=pick(changes.domain_limit, cur["domain_limit"]),
                email_user_limit=pick(changes.email_user_limit, cur["email_user_limit"]))
            _check_limits(parent, merged)
            row = await conn.fetchrow(Q.update_sub_account, parent_id, account_id,
                                      merged.email, merged.first_name, merged.last_name,
                                      merged.company_name, merged.name, merged.domain_limit,
                                      merged.email_user_limit)
            assert row is not None
        return _account(row)

    async def set_suspended(self, parent_id: str, account_id: str,
                            suspended: bool) -> tuple[AccountInfo, Job]:
        """Suspend or unsuspend a sub-account. Every mailbox of it is re-rendered (login
        refused or allowed again); nothing is deleted. The job (in the parent's account)
        completes when the backend holds the new state."""
        if not ids.has_prefix(account_id, "acct"):
            raise NotFound("account")
        async with self.db.tx() as conn:
            await _lock_sub(conn, parent_id, account_id)
            await conn.execute(Q.set_account_status, account_id,
                               "suspended" if suspended else "active")
            bumped = await conn.fetch(Q.bump_account_mailboxes, account_id)
            await conn.execute(Q.wake_account_domains, account_id)
            job = await self.jobs.insert(
                conn, parent_id, "account_suspend" if suspended else "account_unsuspend",
                account_id, [("mailbox", r["id"], r["generation"]) for r in bumped])
            if not bumped:
                job = from_record(Job, await conn.fetchrow(Q.complete_empty_job, job.id))
            for host in await conn.fetch(Q.account_mail_hosts, account_id):
                await conn.execute(Q.notify_work, host["mail_host"])
            row = await conn.fetchrow(Q.get_account, account_id)
            assert row is not None
        return _account(row), job

    async def delete_sub(self, parent_id: str, account_id: str) -> Job:
        """Start deleting a sub-account: its tokens stop at once; its domains, mailboxes
        and aliases are converged away by the engine; the account row goes when they
        are gone."""
        if not ids.has_prefix(account_id, "acct"):
            raise NotFound("account")
        async with self.db.tx() as conn:
            await _lock_sub(conn, parent_id, account_id)
            if await conn.fetchval(Q.count_sub_accounts, account_id):
                raise Conflict("account_has_sub_accounts",
                               "Delete the account's own sub-accounts first.")
            await conn.execute(Q.set_account_status, account_id, "deleting")
            # Revocation of every token of the account (authentication also refuses
            # tokens of an account being deleted).
            await conn.execute(Q.revoke_account_tokens, account_id)
            await conn.execute(Q.delete_account_mailboxes, account_id)
            await conn.execute(Q.delete_account_aliases, account_id)
            doms = await conn.fetch(Q.delete_account_domains, account_id)
            job = await self.jobs.insert(conn, parent_id, "account_delete", account_id,
                                         [("domain", r["id"], r["generation"]) for r in doms])
            if not doms:
                job = from_record(Job, await conn.fetchrow(Q.complete_empty_job, job.id))
            for host in {r["mail_host"] for r in doms}:
                await conn.execute(Q.notify_work, host)
        return job

    async def reseller_usage(self, parent_id: str) -> list[SubAccountUsage]:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.finish_deleted_accounts, parent_id)
            rows = await conn.fetch(Q.reseller_usage, parent_id)
        return [SubAccountUsage(id=r["id"], name=r["name"], status=r["status"],
                                domain_limit=r["domain_limit"],
                                email_user_limit=r["email_user_limit"],
                                domains=int(r["domains"]), email_users=int(r["email_users"]))
                for r in rows]


async def _lock_sub(conn: Conn, parent_id: str, account_id: str) -> Any:
    """The sub-account row of *parent_id*, locked for this transaction; 404 when it is
    not the parent's or is being deleted."""
    cur = await conn.fetchrow(Q.lock_sub_account, parent_id, account_id)
    if cur is None or cur["status"] == "deleting":
        raise NotFound("account")
    return cur

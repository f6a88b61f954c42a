"""The caller's account and usage; the reseller's sub-accounts (create with limits and
a first admin token, list, get, change, suspend and unsuspend, delete) and their usage.

Rules: the reseller API is for an unrestricted token of a reseller account
(``access.require_reseller``); a sub-account's limits never exceed its parent's own
(checked in the store, in the transaction that locks the parent); a reseller reaches
its own children only (every store query filters on the parent's id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .. import ids, paging, validation
from ..errors import ValidationFailed
from ..models import Job, Principal
from ..store.accounts import (
    AccountInfo,
    SubAccountChanges,
    SubAccountInput,
    SubAccountUsage,
    Usage,
)
from .access import require_reseller
from .context import ServiceContext

# The largest limit a sub-account may be given (far above any real host).
MAX_LIMIT = 10_000_000
TEXT_MAX = 128

__all__ = ["MAX_LIMIT", "AccountInfo", "SubAccountChanges", "SubAccountInput",
           "SubAccountUsage", "Usage"]


async def get_account(ctx: ServiceContext, principal: Principal) -> AccountInfo:
    return await ctx.store.accounts.get(principal.account_id)


async def get_usage(ctx: ServiceContext, principal: Principal) -> tuple[AccountInfo, Usage]:
    return await ctx.store.accounts.usage(principal.account_id)


def _check_text(field: str, value: str | None, errs: list[str]) -> str | None:
    if value is None:
        return None
    if len(value) > TEXT_MAX or not (value == "" or value.isprintable()):
        errs.append(f"{field}: must be at most {TEXT_MAX} printable characters")
        return None
    return value.strip()


def _check_limit(field: str, value: int | None, errs: list[str]) -> None:
    if value is not None and not 0 <= value <= MAX_LIMIT:
        errs.append(f"{field}: must be an integer from 0 to {MAX_LIMIT}")


def _check_email(value: str | None, errs: list[str]) -> str | None:
    if value is None:
        return None
    try:
        # A real address: unquoted local part, a host name (no IP literal), the domain
        # in canonical form.
        return validation.contact_address(value)
    except ValueError as exc:
        errs.append(f"email: {exc}")
        return None


def check_changes(changes: SubAccountChanges) -> SubAccountChanges:
    """The changes with texts trimmed and the address canonical, or 400 naming every
    bad field."""
    errs: list[str] = []
    email = _check_email(changes.email, errs)
    first = _check_text("first_name", changes.first_name, errs)
    last = _check_text("last_name", changes.last_name, errs)
    company = _check_text("company_name", changes.company_name, errs)
    _check_limit("domain_limit", changes.domain_limit, errs)
    _check_limit("email_user_limit", changes.email_user_limit, errs)
    if errs:
        raise ValidationFailed(errs)
    return SubAccountChanges(email=email, first_name=first, last_name=last,
                             company_name=company, domain_limit=changes.domain_limit,
                             email_user_limit=changes.email_user_limit)


@dataclass(frozen=True)
class CreatedAccount:
    account: AccountInfo
    token_id: str
    # The first admin token of the sub-account, shown in this answer only.
    token: str


async def create_sub_account(ctx: ServiceContext, principal: Principal,
                             item: SubAccountInput) -> CreatedAccount:
    """A sub-account below the principal's and its first admin token, minted by the
    principal's token (revoked with it, never outliving it)."""
    require_reseller(principal)
    c = check_changes(SubAccountChanges(
        email=item.email, first_name=item.first_name, last_name=item.last_name,
        company_name=item.company_name, domain_limit=item.domain_limit,
        email_user_limit=item.email_user_limit))
    assert c.email is not None
    clean = SubAccountInput(email=c.email, first_name=c.first_name or "",
                            last_name=c.last_name or "", company_name=c.company_name or "",
                            domain_limit=item.domain_limit,
                            email_user_limit=item.email_user_limit, reseller=item.reseller)
    account, tid, token = await ctx.store.accounts.create_sub(
        principal.account_id, clean, principal.token_id or None)
    return CreatedAccount(account, tid, token)


@dataclass(frozen=True)
class SubAccountListing:
    accounts: list[AccountInfo]
    total: int
    offset: int
    next_cursor: str | None


# The sort a sub-accounts cursor belongs to: oldest first by (created_at, id).
CURSOR_SORT = "accounts:created_at,id"


def _position(cursor: str) -> tuple[datetime, str]:
    at, aid = paging.decode(cursor, CURSOR_SORT, 2)
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not isinstance(aid, str) \
            or not ids.has_prefix(aid, "acct"):
        raise ValidationFailed(["cursor: not a cursor of this list (use next_cursor as "
                                "given)"])
    return when, aid


async def list_sub_accounts(ctx: ServiceContext, principal: Principal, limit: int,
                            offset: int, cursor: str | None = None) -> SubAccountListing:
    """The principal's own sub-accounts, oldest first, from *offset* or *cursor* (which
    takes precedence; the answer then says offset 0)."""
    require_reseller(principal)
    after = _position(cursor) if cursor is not None else None
    if after is not None:
        offset = 0
    accounts, total, nxt = await ctx.store.accounts.list_sub(principal.account_id, limit,
                                                             offset, after)
    return SubAccountListing(accounts, total, offset, paging.encode(
        CURSOR_SORT, [nxt[0].isoformat(), nxt[1]]) if nxt is not None else None)


async def get_sub_account(ctx: ServiceContext, principal: Principal,
                          account_id: str) -> AccountInfo:
    require_reseller(principal)
    return await ctx.store.accounts.get_sub(principal.account_id, account_id)


async def update_sub_account(ctx: ServiceContext, principal: Principal, account_id: str,
                             changes: SubAccountChanges) -> AccountInfo:
    require_reseller(principal)
    return await ctx.store.accounts.update_sub(principal.account_id, account_id,
                                               check_changes(changes))


async def set_suspended(ctx: ServiceContext, principal: Principal, account_id: str,
                        suspended: bool) -> tuple[AccountInfo, Job]:
    """Suspend (no mailbox of the account may log in or send; data kept) or undo it;
    the job completes when the mail server holds the new state."""
    require_reseller(principal)
    return await ctx.store.accounts.set_suspended(principal.account_id, account_id,
                                                  suspended)


async def delete_sub_account(ctx: ServiceContext, principal: Principal,
                             account_id: str) -> Job:
    """Start deleting a sub-account: its tokens stop at once, a job removes its
    domains, mailboxes and aliases."""
    require_reseller(principal)
    return await ctx.store.accounts.delete_sub(principal.account_id, account_id)


async def reseller_usage(ctx: ServiceContext,
                         principal: Principal) -> list[SubAccountUsage]:
    require_reseller(principal)
    return await ctx.store.accounts.reseller_usage(principal.account_id)

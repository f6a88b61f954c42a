"""Aliases: forwards from one address to one or more targets (internal or external),
catch-alls (local part ``""``, the address ``@domain``; a real mailbox always wins over
it), and alias domains (every mailbox name of one domain also at another).

Each is a new sending identity of its domain, so the domain rules of
``service/guards.py`` apply: resolved once, set up, not blocked by its reputation (an
alias domain: neither side). Targets are checked by the store in the transaction that
writes them (canonical, none twice, never the alias itself), so a refused request
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import paging
from ..errors import ValidationFailed
from ..models import Alias, Principal
from . import guards
from .context import ServiceContext
from .idempotency import Answer, idempotent

# The order of the alias list, named in its cursors.
SORT = "address"


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    # Pass back as the cursor for the next page; None on the last page.
    next_cursor: str | None


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def alias_view(a: Alias, domain: str) -> dict[str, Any]:
    """The alias as the API shows it."""
    return {
        "id": a.id,
        "address": a.address,
        "domain": domain,
        "domain_id": a.domain_id,
        "catch_all": a.address.startswith("@"),
        "targets": list(a.targets),
        "status": "active" if a.observed_generation >= a.generation else "pending",
        "last_error": a.last_error,
        "created_at": _rfc3339(a.created_at),
        "updated_at": _rfc3339(a.updated_at),
    }


async def create(ctx: ServiceContext, principal: Principal, domain_ref: object,
                 local_part: str, targets: Sequence[str], key: str | None = None,
                 digest: bytes = b"") -> Answer:
    """202 with the alias and its ``job_id``. *local_part* ``""``: a catch-all."""

    async def produce() -> Answer:
        domain = await guards.identity_domain(ctx, principal, domain_ref)
        alias, job = await ctx.store.aliases.create(principal.account_id, domain,
                                                    f"{local_part}@{domain.name}", targets)
        return Answer(202, {**alias_view(alias, domain.name), "job_id": job.id})

    return await idempotent(ctx, principal, key, digest, produce)


async def get(ctx: ServiceContext, principal: Principal, alias_id: str) -> dict[str, Any]:
    a, d = await ctx.store.aliases.get(principal.account_id, alias_id)
    return alias_view(a, d)


async def page(ctx: ServiceContext, principal: Principal, domain: str | None,
               search: str | None, limit: int, offset: int = 0,
               cursor: str | None = None) -> Page:
    """A page of the caller's aliases in address order. *domain*: a domain id or a name
    in any spelling (``guards.list_filter_domain``). *cursor*: a ``next_cursor`` of
    this list (keyset paging; *offset* then ignored)."""
    after: str | None = None
    if cursor is not None:
        (key,) = paging.decode(cursor, SORT, 1)
        if not isinstance(key, str):
            raise ValidationFailed(["cursor: not a cursor of this list (use next_cursor as "
                                    "given)"])
        after = key
    name = await guards.list_filter_domain(ctx, principal, domain)
    items, total, more = await ctx.store.aliases.page(principal.account_id, name, search,
                                                      limit, offset, after)
    nxt = paging.encode(SORT, [items[-1][0].address]) if more and items else None
    return Page([alias_view(a, d) for a, d in items], total, nxt)


async def replace_targets(ctx: ServiceContext, principal: Principal, alias_id: str,
                          targets: Sequence[str]) -> Answer:
    """202 with the alias and its ``job_id``."""
    a, d, job = await ctx.store.aliases.change(principal.account_id, alias_id, targets)
    return Answer(202, {**alias_view(a, d), "job_id": job.id})


async def delete(ctx: ServiceContext, principal: Principal, alias_id: str) -> Answer:
    a, _d, job = await ctx.store.aliases.change(principal.account_id, alias_id, None)
    return Answer(202, {"job_id": job.id, "status": "pending", "id": a.id})


async def set_alias_domain(ctx: ServiceContext, principal: Principal, domain_ref: object,
                           target_ref: object) -> Answer:
    """Mail to any mailbox name at *domain* goes to the same name at *target*, whose
    mailboxes may also send as it. Both must be domains of the account; *domain* needs
    its own setup (MX) to receive mail."""
    domain = await guards.resolve_domain(ctx, principal, domain_ref, "domain")
    target = await guards.resolve_domain(ctx, principal, target_ref, "target")
    # Either way round it would give a blocked domain's senders a new identity.
    await guards.require_not_blocked(ctx, domain)
    await guards.require_not_blocked(ctx, target)
    job = await ctx.store.aliases.set_alias_domain(principal.account_id, domain, target)
    return Answer(202, {"job_id": job.id, "status": "pending", "domain": domain.name,
                        "target": target.name})


async def list_alias_domains(ctx: ServiceContext,
                             principal: Principal) -> list[dict[str, str]]:
    return await ctx.store.aliases.list_alias_domains(principal.account_id)


async def unset_alias_domain(ctx: ServiceContext, principal: Principal,
                             domain_id: str) -> Answer:
    domain = await ctx.store.domains.get(principal.account_id, domain_id)
    job = await ctx.store.aliases.set_alias_domain(principal.account_id, domain, None)
    return Answer(202, {"job_id": job.id, "status": "pending"})

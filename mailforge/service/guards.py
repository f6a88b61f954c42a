"""The rules every new sending identity passes, written once: which domain a request
names (by id or by any spelling of its name, within the caller's account and domain
restriction), whether that domain is set up (readiness), and whether its sending
reputation blocks it (the reputation guard). Mailboxes, their restores, aliases and
alias domains all go through here, so no path skips a rule or checks it on another
spelling of the name than the one it acts on."""

from __future__ import annotations

from .. import reputation
from ..errors import Conflict
from ..models import Domain, Principal
from ..store.store import canonical_domain
from . import domains
from .context import ServiceContext


async def resolve_domain(ctx: ServiceContext, principal: Principal, ref: object,
                         field: str = "domain") -> Domain:
    """The caller's domain given by id (``dom_...``) or by name in any spelling (case,
    trailing dot, Unicode or A-labels, Unicode full stops): 400 naming *field* if it is
    neither, 404 if the account (or the token's domain restriction) has no such domain.
    Looked up once per request: callers pass the ``Domain`` on."""
    return await domains.resolve(ctx, principal, ref, field)


async def list_filter_domain(ctx: ServiceContext, principal: Principal,
                             ref: str | None) -> str | None:
    """The canonical domain name a list's ``domain`` filter names: a name in any
    spelling (an unknown name simply matches nothing), or a domain id, which must be
    one of the caller's (404 otherwise, as any other id outside its account or domain
    restriction)."""
    if ref is None:
        return None
    if ref.startswith("dom_"):
        return (await resolve_domain(ctx, principal, ref)).name
    return canonical_domain(ref)


def require_ready(domain: Domain) -> None:
    """Mailboxes and aliases only on a domain that is set up (and not being deleted)."""
    if domain.deleted or not domain.backend_enabled:
        raise Conflict("domain_not_ready",
                       f"Domain {domain.name} is not set up; call /v1/domains/setup first.")


async def require_not_blocked(ctx: ServiceContext, domain: Domain) -> None:
    """No new sending identity on a domain its sending reputation blocked: no new or
    restored mailbox, no alias, no alias domain either way. Checked on the resolved
    domain (its canonical name and id), so no other spelling of the name gets past it."""
    # The pool answers one query itself (no connection held across anything).
    await reputation.require_not_blocked(ctx.store.pool, domain.id, domain.name,
                                         ctx.cfg.reputation)


async def identity_domain(ctx: ServiceContext, principal: Principal, ref: object,
                          field: str = "domain") -> Domain:
    """The domain a new mailbox or alias goes to: resolved, set up, not blocked."""
    domain = await resolve_domain(ctx, principal, ref, field)
    require_ready(domain)
    await require_not_blocked(ctx, domain)
    return domain

"""Domains: connect, set up, read (with the sending reputation), list, delete.

The rules live here once, for the API, the CLI and the MCP server alike:

- a domain is named by id (``dom_...``) or by name in any spelling, and found within the
  caller's account and token domain restriction (``resolve``);
- connect stores the names, their ownership and the sealed provider credentials in one
  transaction, then creates each zone at its provider; a zone the provider already has
  and mailforge did not create undoes the whole connect (409 ``zone_exists``);
- the ``Idempotency-Key`` of connect and setup is checked before anything else
  (``service/idempotency.py``), so a retry gets the stored answer;
- a domain's reputation is the same object on the domain, in the domain list (counted
  for the whole page in one query) and on ``/v1/domains/{id}/reputation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import ids, paging, reputation
from ..dns.providers.base import ZoneExists, load_provider
from ..dns.step import DnsService
from ..errors import Conflict, ReconcileError, ValidationFailed
from ..log import get as get_logger
from ..models import Domain, Job, Principal
from ..reserved import reserved_names
from ..store.domains import DomainPosition
from ..store.reputation import ReputationCounts
from .context import ServiceContext
from .idempotency import Answer, idempotent

log = get_logger(__name__)

CURSOR_SORT = "domains:created_at"


@dataclass(frozen=True)
class ConnectRequest:
    """Names to connect (any spelling; canonicalised and checked by the store), the
    provider (None: the configured default) and a Cloudflare token, if any."""

    domains: Sequence[str]
    dns_provider: str | None = None
    cloudflare_api_token: str | None = None


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def domain_view(d: Domain) -> dict[str, Any]:
    """The domain as every answer shows it (``schema.domains.DomainFields``)."""
    return {
        "id": d.id,
        "name": d.name,
        "unicode_name": d.unicode_name,
        "status": d.status,
        "dns_provider": d.dns_provider,
        "mail_host": d.mail_host,
        "last_error": d.last_error,
        # Has the name's public delegation been found pointing at its provider? Until
        # then the domain receives no mail and nothing is signed for it.
        "ownership_verified": d.ownership_verified_at is not None,
        "created_at": _rfc3339(d.created_at),
        "updated_at": _rfc3339(d.updated_at),
    }


def reputation_view(ctx: ServiceContext, counts: ReputationCounts) -> dict[str, Any]:
    """The ``reputation`` object (``schema.domains.Reputation``)."""
    return reputation.of_counts(counts, ctx.cfg.reputation).as_json()


# --------------------------------------------------------------------------- resolve


async def resolve(ctx: ServiceContext, principal: Principal, ref: object,
                  field: str = "domain") -> Domain:
    """The caller's domain given by id (``dom_...``) or by name in any spelling: 400
    naming *field* if it is neither, 404 outside the account or the token's domain
    restriction."""
    if isinstance(ref, str) and ref.startswith("dom_"):
        if not ids.has_prefix(ref, "dom"):
            raise ValidationFailed([f"{field}: is not a domain id (dom_...) or name"])
        return await ctx.store.domains.get(principal.account_id, ref)
    # find canonicalises the name (400 naming the field if it is none).
    return await ctx.store.domains.find(principal.account_id, ref, field)


# --------------------------------------------------------------------------- connect


def _provider(ctx: ServiceContext, req: ConnectRequest) -> str:
    provider = req.dns_provider if req.dns_provider is not None \
        else ctx.cfg.dns.default_provider
    errs = []
    if provider not in ctx.cfg.dns.providers:
        errs.append(f"dns_provider: must be one of: {', '.join(ctx.cfg.dns.providers)}")
    elif req.cloudflare_api_token is not None and provider != "cloudflare":
        errs.append("cloudflare_api_token: only with dns_provider cloudflare")
    if errs:
        raise ValidationFailed(errs)
    return provider


async def _zone(ctx: ServiceContext, d: Domain) -> list[str]:
    """Create the domain's zone at its provider when it hosts zones; the nameservers to
    delegate to. A provider that is down now is retried by setup, so connect succeeds."""
    try:
        creds = await DnsService(ctx.store, ctx.cfg, ctx.box).credentials(d.id)
        return await load_provider(d.dns_provider, ctx.cfg, creds).ensure_zone(d.name)
    except ZoneExists:
        raise
    except ReconcileError as exc:
        log.warning("zone not created at connect", domain=d.name, error=str(exc))
        return []


async def connect(ctx: ServiceContext, principal: Principal, req: ConnectRequest,
                  key: str | None = None, digest: bytes = b"") -> Answer:
    """Connect domains, all or none: 201 ``{domains: [domain + nameservers]}``.

    Names, ownership and the sealed credentials are stored in one transaction; then
    each zone is created at its provider. If the provider already holds a zone of one
    of the names that mailforge did not create (the operator's own), the whole connect
    is undone and answered 409 ``zone_exists``: nothing of it stays."""
    provider = _provider(ctx, req)
    token = req.cloudflare_api_token

    def seal(domain_id: str) -> bytes:
        assert token is not None
        return ctx.box.seal(token.encode(), f"dns-credentials:{domain_id}")

    async def produce() -> Answer:
        created = await ctx.store.domains.connect(
            principal.account_id, req.domains, provider,
            credentials=seal if token is not None else None,
            reserved=reserved_names(ctx.cfg))
        out = []
        taken: list[str] = []
        for i, d in enumerate(created):
            try:
                out.append({**domain_view(d), "nameservers": await _zone(ctx, d)})
            except ZoneExists as exc:
                taken.append(f"domains[{i}]: {exc}")
        if taken:
            for d in created:
                await ctx.store.domains.forget_unset(principal.account_id, d.id)
            raise Conflict("zone_exists", "The DNS provider already has a zone of this "
                           "name that mailforge did not create; it is not taken over.", taken)
        return Answer(201, {"domains": out})

    return await idempotent(ctx, principal, key, digest, produce)


# ----------------------------------------------------------------------------- setup


def _job_answer(job: Job, domain_id: str) -> dict[str, Any]:
    return {"job_id": job.id, "status": job.status, "domain_id": domain_id}


async def setup(ctx: ServiceContext, principal: Principal, ref: object,
                key: str | None = None, digest: bytes = b"") -> Answer:
    """Queue the domain's setup (DKIM keys, DNS records, the mail server): 202
    ``{job_id, status, domain_id}``. The key is checked before the domain is looked
    up, so a retry gets the first answer even if the domain changed since."""

    async def produce() -> Answer:
        domain = await resolve(ctx, principal, ref)
        job = await ctx.store.domains.setup(principal.account_id, domain.id)
        return Answer(202, _job_answer(job, domain.id))

    return await idempotent(ctx, principal, key, digest, produce)


# ------------------------------------------------------------------------------ read


async def get(ctx: ServiceContext, principal: Principal, domain_id: str) -> dict[str, Any]:
    """The domain with its reputation (``schema.domains.Domain``), in one query."""
    d, counts = await ctx.store.domains.get_with_reputation(
        principal.account_id, domain_id, ctx.cfg.reputation.window_days)
    return {**domain_view(d), "reputation": reputation_view(ctx, counts)}


def _position(cursor: str) -> DomainPosition:
    at, did = paging.decode(cursor, CURSOR_SORT, 2)
    bad = ValidationFailed(["cursor: not a cursor of this list (use next_cursor as given)"])
    if not isinstance(at, str) or not isinstance(did, str) or not ids.has_prefix(did, "dom"):
        raise bad
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise bad from None
    if when.tzinfo is None:
        raise bad
    return when, did


async def list_page(ctx: ServiceContext, principal: Principal, limit: int, offset: int,
                    cursor: str | None) -> dict[str, Any]:
    """A page of the caller's domains, oldest first, each with its reputation
    (``schema.domains.DomainList``): ``total``, ``limit``, ``offset`` (0 with a cursor)
    and ``next_cursor``."""
    after = _position(cursor) if cursor is not None else None
    if after is not None:
        offset = 0  # the cursor says where the page starts
    page = await ctx.store.domains.list_page(principal.account_id, limit, offset, after,
                                             ctx.cfg.reputation.window_days)
    nxt = None
    if page.next_position is not None:
        at, did = page.next_position
        nxt = paging.encode(CURSOR_SORT, [at.isoformat(), did])
    return {"domains": [{**domain_view(d), "reputation": reputation_view(ctx, c)}
                        for d, c in page.items],
            "total": page.total, "limit": limit, "offset": offset, "next_cursor": nxt}


# ---------------------------------------------------------------------------- delete


async def delete(ctx: ServiceContext, principal: Principal, domain_id: str) -> dict[str, Any]:
    """Queue the domain's deletion (its mailboxes, keys, and the DNS records mailforge
    owns; never records it does not own): ``{job_id, status, domain_id}``."""
    job = await ctx.store.domains.request_delete(principal.account_id, domain_id)
    return _job_answer(job, domain_id)

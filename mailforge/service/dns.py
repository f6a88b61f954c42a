"""DNS and DKIM of a domain: the live dns-status report, the nameserver check, DKIM
rotation, and which names the public MTA-STS and autoconfig answers serve.

Rules written once here (and in ``dns/conflicts.py``, shared with the DNS step):

- dns-status checks the records expected now against the domain's authoritative
  servers; an SPF or DMARC record left to the operator (a plan conflict) is reported
  with ``conflict: true`` and does not keep the domain from being verified, exactly as
  the DNS step decides convergence;
- check-ns has side effects, by contract (the Winnr guide: "when verified is true, the
  domain is queued for full provisioning"): it creates the zone at the provider if it
  is not there yet, and when the delegation verifies it records the proof of the name
  (the engine then serves the domain) and, for a domain not yet set up, queues its
  setup; the answer names that job (``setup_job_id``), so nothing happens unseen;
- a DKIM rotation request records intent only: the DNS step makes the new keys (and
  they sign only once their records verify). A refused request (a domain not set up,
  being deleted, another account's or outside the token's restriction) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import validation
from ..dns.conflicts import blocks, conflicted_names, is_conflict
from ..dns.providers.base import ZoneExists, delegation
from ..dns.step import DnsService
from ..dns.verify import verify
from ..errors import Conflict, NotFound, ReconcileError
from ..models import Domain, Principal
from . import domains
from .context import ServiceContext


def _svc(ctx: ServiceContext) -> DnsService:
    return DnsService(ctx.store, ctx.cfg, ctx.box)


# ------------------------------------------------------------------------ dns-status


async def status(ctx: ServiceContext, principal: Principal, domain_id: str) -> dict[str, Any]:
    """The records expected for the domain, each checked live at its authoritative
    servers (``schema.domains.DnsStatus``)."""
    d = await ctx.store.domains.get(principal.account_id, domain_id)
    svc = _svc(ctx)
    expected = await svc.expected(d.id, d.name)
    records: list[dict[str, Any]]
    try:
        prov = await svc.provider_for(d.id, d.dns_provider)
        servers = await prov.authoritative_servers(d.name)
        records = [c.json() for c in await verify(expected, servers,
                                                  ctx.cfg.dns.query_timeout)]
    except ReconcileError as exc:
        records = [{"name": e.record.name, "type": e.record.rtype, "purpose": e.purpose,
                    "required": e.required, "status": "missing",
                    "expected": e.record.content, "found": []} for e in expected]
        if records:
            records[0]["error"] = str(exc)
    opts = await ctx.store.dns.options(d.id)
    report = (opts.report if opts is not None else None) or {}
    conflicts = [str(c) for c in report.get("conflicts", [])]
    conflicted = conflicted_names(conflicts)
    for r in records:
        if is_conflict(r["purpose"], r["name"], r["status"], conflicted):
            r["conflict"] = True  # the operator's own record stays: reported, not blocking
    verified = not any(blocks(r["purpose"], r["name"], r["status"], r["required"],
                              conflicted) for r in records)
    return {"domain": d.name, "domain_id": d.id, "verified": verified,
            "provider": d.dns_provider, "records": records, "conflicts": conflicts}


# -------------------------------------------------------------------------- check-ns


@dataclass(frozen=True)
class NsCheck:
    verified: bool
    nameservers: list[str]
    expected: list[str]
    message: str
    # The setup a verified check queued for a domain not yet set up.
    setup_job_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"verified": self.verified, "nameservers": self.nameservers,
                "expected": self.expected, "message": self.message,
                "setup_job_id": self.setup_job_id}


async def _proven(ctx: ServiceContext, principal: Principal, d: Domain) -> str | None:
    """What a verified delegation starts: the proof of the name is recorded (once; a
    new generation makes the engine serve the domain now rather than at its next
    back-off), and a domain not yet set up is queued for setup. The setup's job id,
    if one was queued."""
    if d.backend_enabled:
        await ctx.store.domains.record_ownership(d.id)
        return None
    job = await ctx.store.domains.prove_and_setup(principal.account_id, d.id)
    return job.id


async def check_ns(ctx: ServiceContext, principal: Principal, ref: object) -> NsCheck:
    """Check the domain's public delegation against its provider's nameservers (the
    zone is created at the provider first if it is not there). When it verifies, the
    name is proven and a domain not yet set up is queued for setup (``_proven``)."""
    d = await domains.resolve(ctx, principal, ref)
    prov = await _svc(ctx).provider_for(d.id, d.dns_provider)
    try:
        wanted = await prov.ensure_zone(d.name)
    except ZoneExists as exc:
        raise Conflict("zone_exists", str(exc), [f"domain: {d.name}"]) from None
    except ReconcileError as exc:
        return NsCheck(False, [], [], f"provider unavailable: {exc}")
    dlg = await delegation(d.name, wanted, ctx.cfg.dns.ns_resolver, ctx.cfg.dns.query_timeout)
    found, expected = list(dlg.found), list(dlg.wanted)
    if not dlg.verified:
        return NsCheck(False, found, expected,
                       f"delegate {d.name} to: {', '.join(expected) or '(no nameservers known)'}")
    if d.deleted:
        return NsCheck(True, found, expected, "delegated to the provider's nameservers; "
                       "the domain is being deleted")
    job_id = await _proven(ctx, principal, d)
    msg = ("Nameservers verified. Domain queued for provisioning." if job_id is not None
           else "Nameservers verified: delegated to the provider's nameservers.")
    return NsCheck(True, found, expected, msg, job_id)


# ---------------------------------------------------------------------- DKIM rotation


async def rotate_dkim(ctx: ServiceContext, principal: Principal,
                      domain_id: str) -> dict[str, Any]:
    """Ask for new DKIM keys: 202 ``{job_id, status, domain_id}``. Only the request is
    recorded (with a new generation and its job); the DNS step makes the keys, publishes
    them, and lets them sign once their records verify. A domain that is not set up or
    is being deleted is 404 ``set-up domain``, and nothing is written."""
    d = await ctx.store.domains.get(principal.account_id, domain_id)
    if not d.backend_enabled or d.deleted:
        raise NotFound("set-up domain")
    try:
        # The same conditions again, atomically with the write (the domain may have
        # changed since it was read).
        job = await ctx.store.domains.request_rotation(principal.account_id, d.id)
    except NotFound:
        raise NotFound("set-up domain") from None
    return {"job_id": job.id, "status": job.status, "domain_id": d.id}


# --------------------------------------------------------------- public answers


async def served_name(ctx: ServiceContext, host: str, prefix: str, fallback: str) -> str:
    """The domain the public MTA-STS policy or autoconfig answer is for: the Host
    header after *prefix* (``mta-sts.``, ``autoconfig.``), else *fallback* (the
    ``domain`` query parameter). 404 unless it is a set-up, proven, live domain of this
    host's database (any account: these answers name no tenant)."""
    host = host.split(":")[0].lower()
    name = host[len(prefix):] if host.startswith(prefix) else fallback
    try:
        name = validation.domain_name(name)
    except ValueError:
        raise NotFound("domain") from None
    if not await ctx.store.domains.is_served(name):
        raise NotFound("domain")
    return name

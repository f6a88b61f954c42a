"""Domain endpoints: connect, setup, list, get."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import ids, reputation, validation
from ..dns.providers.base import ZoneExists, load_provider
from ..dns.step import DnsService
from ..errors import Conflict, ReconcileError, ValidationFailed
from ..log import get
from ..models import Domain
from ..reserved import reserved_names
from ..store.dns import DnsStore
from . import oas
from .context import CTX
from .http import authenticate, check_fields, json_body, paging, rfc3339
from .idempotency import idempotent

routes = web.RouteTableDef()
log = get(__name__)

MAX_CONNECT = 100


def domain_json(d: Domain) -> dict[str, Any]:
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
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
    }


@routes.post("/v1/domains/connect")
async def connect(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"domains", "dns_provider", "cloudflare_api_token"}, {"domains"})
    names: list[tuple[str, str]] = []
    raw = body.get("domains")
    if "domains" in body:
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CONNECT:
            errs.append(f"domains: must be a list of 1 to {MAX_CONNECT} domain names")
        else:
            seen: set[str] = set()
            for i, item in enumerate(raw):
                try:
                    ascii_name = validation.domain_name(item)
                except ValueError as exc:
                    errs.append(f"domains[{i}]: {exc}")
                    continue
                if ascii_name in seen:
                    errs.append(f"domains[{i}]: {ascii_name} is listed twice")
                seen.add(ascii_name)
                names.append((ascii_name, validation.unicode_domain(ascii_name)))
    ctx = request.app[CTX]
    choices = ctx.cfg.dns.providers
    provider = body.get("dns_provider", ctx.cfg.dns.default_provider)
    if not isinstance(provider, str) or provider not in choices:
        errs.append(f"dns_provider: must be one of: {', '.join(choices)}")
    token = body.get("cloudflare_api_token")
    if "cloudflare_api_token" in body and (not isinstance(token, str)
                                           or not 1 <= len(token) <= 200):
        errs.append("cloudflare_api_token: must be a string of 1 to 200 characters")
    elif token is not None and provider != "cloudflare":
        errs.append("cloudflare_api_token: only with dns_provider cloudflare")
    if errs:
        raise ValidationFailed(errs)

    def seal(domain_id: str) -> bytes:
        assert isinstance(token, str)
        return ctx.box.seal(token.encode(), f"dns-credentials:{domain_id}")

    async def produce() -> tuple[int, dict[str, Any]]:
        # Names, ownership and credentials are all stored in one transaction (or none).
        created = await ctx.store.connect_domains(
            principal.account_id, names, provider,
            credentials=seal if isinstance(token, str) else None,
            reserved=reserved_names(ctx.cfg))
        out = []
        taken: list[str] = []
        for i, d in enumerate(created):
            try:
                out.append({**domain_json(d), "nameservers": await _zone(request, d)})
            except ZoneExists as exc:
                taken.append(f"domains[{i}]: {exc}")
        if taken:
            # All or none: the provider holds a zone of this name that is not ours (the
            # operator's own): the connect is undone, nothing of it stays.
            ds = DnsStore(ctx.store)
            for d in created:
                await ds.forget_unset_domain(principal.account_id, d.id)
            raise Conflict("zone_exists", "The DNS provider already has a zone of this "
                           "name that mailforge did not create; it is not taken over.", taken)
        return 201, {"domains": out}

    return await idempotent(request, principal, body, produce)


@routes.post("/v1/domains/setup")
async def setup(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"domain"}, {"domain"})
    if errs:
        raise ValidationFailed(errs)
    store = request.app[CTX].store
    domain = await _resolve(request, principal.account_id, body["domain"])

    async def produce() -> tuple[int, dict[str, Any]]:
        job = await store.setup_domain(principal.account_id, domain.id)
        return 202, {"job_id": job.id, "status": job.status, "domain_id": domain.id}

    return await idempotent(request, principal, body, produce)


async def _zone(request: web.Request, d: Domain) -> list[str]:
    """Create the domain's zone at its provider when it hosts zones; the nameservers to
    delegate to. A provider that is down now is retried by setup, so connect succeeds."""
    ctx = request.app[CTX]
    try:
        prov = load_provider(d.dns_provider, ctx.cfg,
                             await DnsService(ctx.store, ctx.cfg, ctx.box).credentials(d.id))
        return await prov.ensure_zone(d.name)
    except ZoneExists:
        raise
    except ReconcileError as exc:
        log.warning("zone not created at connect", domain=d.name, error=str(exc))
        return []


async def _resolve(request: web.Request, account_id: str, ref: object) -> Domain:
    """A domain given by id (``dom_…``) or by name."""
    store = request.app[CTX].store
    if isinstance(ref, str) and ref.startswith("dom_"):
        if not ids.has_prefix(ref, "dom"):
            raise ValidationFailed(["domain: is not a domain id (dom_...) or name"])
        return await store.get_domain(account_id, ref)
    # find_domain canonicalises the name (400 naming the field if it is none).
    return await store.find_domain(account_id, ref, "domain")


@routes.get("/v1/domains")
async def list_domains(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    limit, offset = paging(request)
    items, total = await request.app[CTX].store.list_domains(principal.account_id, limit,
                                                             offset)
    return web.json_response({"domains": [domain_json(d) for d in items], "total": total,
                              "limit": limit, "offset": offset})


@routes.get("/v1/domains/{id}")
async def get_domain(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    d = await ctx.store.get_domain(principal.account_id, request.match_info["id"])
    body = domain_json(d)
    body["reputation"] = await reputation.domain_json(ctx.store.pool, d.id, ctx.cfg.reputation)
    return web.json_response(body)


_DOMAIN = oas.obj({
    "id": {"type": "string"}, "name": {"type": "string"}, "unicode_name": {"type": "string"},
    "status": {"type": "string",
               "enum": ["pending", "provisioning", "active", "failed", "deleting"]},
    "dns_provider": {"type": "string"}, "mail_host": {"type": "string"},
    "ownership_verified": {"type": "boolean"},
    "last_error": oas.NULLABLE_STR, "created_at": oas.TIME, "updated_at": oas.TIME},
    ("id", "name", "status", "dns_provider"))

_CONNECTED = {**_DOMAIN, "properties": {
    **_DOMAIN["properties"], "nameservers": {"type": "array", "items": {"type": "string"}}}}

openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/domains/connect": {"post": {
        "summary": "Connect domains (creates the zone where the provider hosts zones)",
        "operationId": "connectDomains", "parameters": [oas.IDEMPOTENCY],
        "requestBody": oas.body(oas.obj({
            "domains": {"type": "array", "minItems": 1, "maxItems": MAX_CONNECT,
                        "items": {"type": "string"}},
            "dns_provider": {"type": "string"},
            "cloudflare_api_token": {"type": "string", "minLength": 1, "maxLength": 200}},
            ("domains",), closed=True)),
        "responses": oas.responses(
            {"201": oas.ok("Connected; delegate to the nameservers.", oas.obj(
                {"domains": {"type": "array", "items": _CONNECTED}}, ("domains",)))},
            oas.WRITE_ERRORS)}},
    "/v1/domains/setup": {"post": {
        "summary": "Set the domain up: DKIM keys, DNS records, mail server; a job",
        "operationId": "setupDomain", "parameters": [oas.IDEMPOTENCY],
        "requestBody": oas.body(oas.obj({"domain": {"type": "string"}}, ("domain",),
                                        closed=True)),
        "responses": oas.responses({"202": oas.ok("Setup queued.", oas.obj({
            "job_id": {"type": "string"}, "status": {"type": "string"},
            "domain_id": {"type": "string"}}, ("job_id", "status")))}, oas.WRITE_ERRORS)}},
    "/v1/domains": {"get": {
        "summary": "List the account's domains", "operationId": "listDomains",
        "parameters": [oas.LIMIT, oas.OFFSET],
        "responses": oas.responses({"200": oas.ok("A page of domains.", oas.obj({
            "domains": {"type": "array", "items": _DOMAIN}, "total": {"type": "integer"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"}},
            ("domains", "total")))})}},
    "/v1/domains/{id}": {"get": {
        "summary": "One domain", "operationId": "getDomain", "parameters": [oas.PATH_ID],
        "responses": oas.responses({"200": oas.ok("The domain.", _DOMAIN)})}},
}

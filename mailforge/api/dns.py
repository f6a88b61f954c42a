"""DNS and DKIM endpoints: check-ns, dns-status (live queries to the authoritative
servers), DKIM rotation, domain deletion, and the files mailforge serves for domains
(MTA-STS policy for ``mta-sts.<domain>``, Thunderbird-style autoconfig XML)."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from .. import validation
from ..dns.providers.base import ZoneExists, delegation
from ..dns.records import mta_sts_policy
from ..dns.step import DnsService
from ..dns.verify import verify
from ..errors import Conflict, NotFound, ReconcileError, ValidationFailed
from ..store.dns import DnsStore
from . import oas
from .context import CTX
from .domains import _resolve
from .http import authenticate, check_fields, json_body

routes = web.RouteTableDef()

def _svc(request: web.Request) -> DnsService:
    ctx = request.app[CTX]
    return DnsService(ctx.store, ctx.cfg, ctx.box)


@routes.get("/v1/domains/{id}/dns-status")
async def dns_status(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    d = await ctx.store.get_domain(principal.account_id, request.match_info["id"])
    svc = _svc(request)
    expected = await svc.expected(d.id, d.name)
    try:
        prov = await svc.provider_for(d.id, d.dns_provider)
        servers = await prov.authoritative_servers(d.name)
        checks = await verify(expected, servers, ctx.cfg.dns.query_timeout)
        records = [c.json() for c in checks]
    except ReconcileError as exc:
        records = [{"name": e.record.name, "type": e.record.rtype, "purpose": e.purpose,
                    "required": e.required, "status": "missing",
                    "expected": e.record.content, "found": []} for e in expected]
        records and records[0].setdefault("error", str(exc))
    opts = await DnsStore(ctx.store).options(d.id)
    report = (opts["dns_report"] if opts else None) or {}
    conflicts = list(report.get("conflicts", []))
    conflicted = {c.split(" ", 1)[0] for c in conflicts}
    for r in records:
        if r["purpose"] in ("spf", "dmarc") and r["name"] in conflicted and \
                r["status"] == "mismatch":
            r["conflict"] = True  # the operator's own record stays: reported, not blocking
    verified = all(r["status"] == "ok" or r.get("conflict") for r in records
                   if r["required"])
    return web.json_response({"domain": d.name, "domain_id": d.id, "verified": verified,
                              "provider": d.dns_provider, "records": records,
                              "conflicts": conflicts})


@routes.post("/v1/domains/{id}/dkim/rotate")
async def dkim_rotate(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    d = await ctx.store.get_domain(principal.account_id, request.match_info["id"])
    if not d.backend_enabled or d.deleted:
        raise NotFound("set-up domain")
    svc = _svc(request)
    keys = await svc.ds.keys(d.id)
    # Rotation on demand: new pending keys now; they sign only once their records verify.
    if not any(k.state in ("pending", "published") for k in keys):
        await svc.new_keys(d.id)
    _, job = await svc.ds.request_rotation(principal.account_id, d.id)
    return web.json_response({"job_id": job.id, "status": job.status, "domain_id": d.id},
                             status=202)


@routes.delete("/v1/domains/{id}")
async def delete_domain(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    d = await ctx.store.get_domain(principal.account_id, request.match_info["id"])
    _, job = await DnsStore(ctx.store).request_delete(principal.account_id, d.id)
    return web.json_response({"job_id": job.id, "status": job.status, "domain_id": d.id},
                             status=202)


@routes.post("/v1/domains/check-ns")
async def check_ns(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"domain"}, {"domain"})
    if errs:
        raise ValidationFailed(errs)
    ctx = request.app[CTX]
    d = await _resolve(request, principal.account_id, body["domain"])
    svc = _svc(request)
    prov = await svc.provider_for(d.id, d.dns_provider)
    try:
        wanted = await prov.ensure_zone(d.name)
    except ZoneExists as exc:
        raise Conflict("zone_exists", str(exc), [f"domain: {d.name}"]) from None
    except ReconcileError as exc:
        return web.json_response({"verified": False, "nameservers": [],
                                  "message": f"provider unavailable: {exc}"})
    dlg = await delegation(d.name, wanted, ctx.cfg.dns.ns_resolver, ctx.cfg.dns.query_timeout)
    verified, found, wanted = dlg.verified, list(dlg.found), list(dlg.wanted)
    if verified and not d.deleted:
        # The proof the engine waits for: recorded once (a new generation makes the
        # engine serve the domain now, not at its next back-off).
        await svc.ds.record_ownership(d.id)
        if not d.backend_enabled:
            await ctx.store.setup_domain(principal.account_id, d.id)
    msg = ("delegated to the provider's nameservers" if verified else
           f"delegate {d.name} to: {', '.join(wanted) or '(no nameservers known)'}")
    return web.json_response({"verified": verified, "nameservers": found, "expected": wanted,
                              "message": msg})


async def _domain_from_host(request: web.Request, prefix: str) -> str:
    host = request.headers.get("Host", "").split(":")[0].lower()
    name = host[len(prefix):] if host.startswith(prefix) else request.query.get("domain", "")
    try:
        name = validation.domain_name(name)
    except ValueError:
        raise NotFound("domain") from None
    if not await DnsStore(request.app[CTX].store).is_served(name):
        raise NotFound("domain")
    return name


@routes.get("/.well-known/mta-sts.txt")
async def mta_sts(request: web.Request) -> web.Response:
    await _domain_from_host(request, "mta-sts.")
    return web.Response(text=mta_sts_policy(request.app[CTX].cfg), content_type="text/plain")


@routes.get("/mail/config-v1.1.xml")
async def autoconfig(request: web.Request) -> web.Response:
    domain = await _domain_from_host(request, "autoconfig.")
    h = request.app[CTX].cfg.host
    mx = escape(request.app[CTX].cfg.dns.mx_hostname.rstrip("."))
    d = escape(domain)
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{d}">
    <domain>{d}</domain>
    <displayName>{d}</displayName>
    <incomingServer type="imap">
      <hostname>{mx}</hostname><port>{h.imap.port}</port>
      <socketType>SSL</socketType><username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{mx}</hostname><port>{h.submission.port}</port>
      <socketType>STARTTLS</socketType><username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""
    return web.Response(text=xml, content_type="application/xml")


_JOB = oas.obj({"job_id": {"type": "string"}, "status": {"type": "string"},
                "domain_id": {"type": "string"}}, ("job_id", "status"))
_REC = oas.obj({
    "name": {"type": "string"}, "type": {"type": "string"}, "purpose": {"type": "string"},
    "required": {"type": "boolean"},
    "status": {"type": "string", "enum": ["ok", "missing", "mismatch"]},
    "expected": {"type": "string"}, "found": {"type": "array", "items": {"type": "string"}},
    "error": {"type": "string"}, "conflict": {"type": "boolean"}},
    ("name", "type", "status", "expected", "found", "required"))
_TEXT = {"type": "string"}

openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/domains/{id}/dns-status": {"get": {
        "summary": "Records expected for the domain, checked against its authoritative servers",
        "operationId": "getDnsStatus", "parameters": [oas.PATH_ID],
        "responses": oas.responses({"200": oas.ok("What was expected and found.", oas.obj({
            "domain": {"type": "string"}, "domain_id": {"type": "string"},
            "verified": {"type": "boolean"}, "provider": {"type": "string"},
            "records": {"type": "array", "items": _REC},
            "conflicts": {"type": "array", "items": {"type": "string"}}},
            ("domain", "verified", "records")))})}},
    "/v1/domains/{id}/dkim/rotate": {"post": {
        "summary": "Rotate the domain's DKIM keys (new selectors sign once verified)",
        "operationId": "rotateDkim", "parameters": [oas.PATH_ID],
        "responses": oas.responses({"202": oas.ok("Rotation queued.", _JOB)})}},
    "/v1/domains/{id}": {"delete": {
        "summary": "Delete the domain: mailboxes, keys, and the DNS records mailforge owns",
        "operationId": "deleteDomain", "parameters": [oas.PATH_ID],
        "responses": oas.responses({"202": oas.ok("Deletion queued.", _JOB)})}},
    "/v1/domains/check-ns": {"post": {
        "summary": "Check the domain's delegation to its provider's nameservers",
        "operationId": "checkNs",
        "requestBody": oas.body(oas.obj({"domain": {"type": "string"}}, ("domain",),
                                        closed=True)),
        "responses": oas.responses({"200": oas.ok("The delegation as found.", oas.obj({
            "verified": {"type": "boolean"},
            "nameservers": {"type": "array", "items": {"type": "string"}},
            "expected": {"type": "array", "items": {"type": "string"}},
            "message": {"type": "string"}}, ("verified", "nameservers", "message")))},
            oas.WRITE_ERRORS)}},
    "/.well-known/mta-sts.txt": {"get": {
        "summary": "MTA-STS policy of the domain named by the Host header (mta-sts.<domain>)",
        "operationId": "getMtaStsPolicy", "security": [],
        "parameters": [{"name": "domain", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The policy (RFC 8461).",
                              "content": {"text/plain": {"schema": _TEXT}}},
                      "404": oas.error(404)}}},
    "/mail/config-v1.1.xml": {"get": {
        "summary": "Mail client autoconfiguration of the domain named by the Host header",
        "operationId": "getAutoconfig", "security": [],
        "parameters": [{"name": "domain", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Thunderbird-style autoconfig XML.",
                              "content": {"application/xml": {"schema": _TEXT}}},
                      "404": oas.error(404)}}},
}

"""DNS and DKIM endpoints: check-ns, dns-status (live queries to the authoritative
servers), DKIM rotation, and the files mailforge serves for domains (MTA-STS policy for
``mta-sts.<domain>``, Thunderbird-style autoconfig XML). Each parses, calls one service
function (``service/dns.py``), renders."""

from __future__ import annotations

from xml.sax.saxutils import escape

from aiohttp import web

from ..dns.records import mta_sts_policy
from ..schema import domains as schema
from ..service import dns as service
from .context import CTX
from .operation import Raw, body_of, operation, principal_of, query_of
from .render import json_response

routes = web.RouteTableDef()

_ID = {"id": "The domain's id (dom_...)."}


@operation(routes, "GET", "/v1/domains/{id}/dns-status", id="getDnsStatus", tag="dns",
           summary="Records expected for the domain, checked against its authoritative "
                   "servers",
           description="Every record mailforge wants for the domain (MX, SPF, DKIM, DMARC, "
                       "MTA-STS, TLS-RPT, SRV), each queried now at the domain's "
                       "authoritative servers: ok, missing or mismatch. An SPF or DMARC "
                       "record the operator already had stays theirs: it is marked "
                       "conflict and does not keep the domain from being verified.",
           permission="read", answers={200: schema.DnsStatus}, path_params=_ID)
async def dns_status(request: web.Request) -> web.StreamResponse:
    return json_response(await service.status(request.app[CTX], principal_of(request),
                                              request.match_info["id"]))


@operation(routes, "POST", "/v1/domains/{id}/dkim/rotate", id="rotateDkim", tag="dns",
           summary="Rotate the domain's DKIM keys (new selectors sign once verified)",
           description="Records the request and answers with its job; the DNS worker makes "
                       "new keys under new selectors, publishes them, and they sign only "
                       "once their records verify (the old keys retire, then are revoked). "
                       "A domain not set up, or being deleted, is 404 and nothing changes.",
           permission="write", answers={202: schema.DomainJob}, path_params=_ID)
async def dkim_rotate(request: web.Request) -> web.StreamResponse:
    return json_response(await service.rotate_dkim(request.app[CTX], principal_of(request),
                                                   request.match_info["id"]), status=202)


@operation(routes, "POST", "/v1/domains/check-ns", id="checkNs", tag="dns",
           summary="Check the domain's delegation to its provider's nameservers",
           description="Creates the zone at the provider if it is not there, then looks up "
                       "the name's public delegation. When it points at the provider's "
                       "nameservers, the name is proven (the domain may receive mail) and a "
                       "domain not yet set up is queued for setup: its job is "
                       "setup_job_id.",
           permission="write", body=schema.DomainRef, answers={200: schema.NsCheck},
           errors=(409,))
async def check_ns(request: web.Request) -> web.StreamResponse:
    body = body_of(request, schema.DomainRef)
    found = await service.check_ns(request.app[CTX], principal_of(request), body.domain)
    return json_response(found.as_json())


@operation(routes, "GET", "/.well-known/mta-sts.txt", id="getMtaStsPolicy", tag="dns",
           summary="MTA-STS policy of the domain named by the Host header "
                   "(mta-sts.<domain>)",
           description="The RFC 8461 policy of a set-up, proven domain; 404 for any other "
                       "name. Public: it names no tenant.",
           permission=None, query=schema.ServedDomain,
           answers={200: Raw("The policy (RFC 8461).", "text/plain")}, errors=(404,))
async def mta_sts(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    await service.served_name(ctx, request.headers.get("Host", ""), "mta-sts.",
                              query_of(request, schema.ServedDomain).domain or "")
    return web.Response(text=mta_sts_policy(ctx.cfg), content_type="text/plain")


@operation(routes, "GET", "/mail/config-v1.1.xml", id="getAutoconfig", tag="dns",
           summary="Mail client autoconfiguration of the domain named by the Host header",
           description="Thunderbird-style autoconfig XML (IMAP and submission settings) of "
                       "a set-up, proven domain; 404 for any other name. Public.",
           permission=None, query=schema.ServedDomain,
           answers={200: Raw("Thunderbird-style autoconfig XML.", "application/xml")},
           errors=(404,))
async def autoconfig(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    domain = await service.served_name(ctx, request.headers.get("Host", ""), "autoconfig.",
                                       query_of(request, schema.ServedDomain).domain or "")
    h = ctx.cfg.host
    mx = escape(ctx.cfg.dns.mx_hostname.rstrip("."))
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

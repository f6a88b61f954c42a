"""Domain endpoints: connect, setup, list, get, delete. Each parses (its models,
``schema/domains.py``), calls one service function (``service/domains.py``), renders."""

from __future__ import annotations

from aiohttp import web

from ..schema import domains as schema
from ..service import domains as service
from .context import CTX
from .idempotency import key_of, render
from .operation import body_of, operation, principal_of, query_of
from .render import json_response

routes = web.RouteTableDef()

_ID = {"id": "The domain's id (dom_...)."}


@operation(routes, "POST", "/v1/domains/connect", id="connectDomains", tag="domains",
           summary="Connect domains (creates the zone where the provider hosts zones)",
           description="Records the domains, all or none, and creates each one's zone at "
                       "its DNS provider; delegate each domain to the nameservers "
                       "answered, then call check-ns. A name at, under or above a domain "
                       "of another account or of this mail host is refused (409), and so "
                       "is a zone the provider already holds that mailforge did not "
                       "create (409 zone_exists: nothing of the connect stays).",
           permission="write", body=schema.ConnectDomains, answers={201: schema.Connected},
           errors=(409,), idempotent=True)
async def connect(request: web.Request) -> web.StreamResponse:
    body = body_of(request, schema.ConnectDomains)
    key, digest = key_of(request)
    req = service.ConnectRequest(body.domains, body.dns_provider, body.cloudflare_api_token)
    return render(await service.connect(request.app[CTX], principal_of(request), req,
                                        key, digest))


@operation(routes, "POST", "/v1/domains/setup", id="setupDomain", tag="domains",
           summary="Set the domain up: DKIM keys, DNS records, mail server; a job",
           description="Queues the setup of a connected domain: DKIM keys, its DNS records "
                       "(MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV) through its provider, "
                       "and the mail server. The domain receives mail once its name is "
                       "proven by its delegation (check-ns) and becomes active once its "
                       "records verify.",
           permission="write", body=schema.DomainRef, answers={202: schema.DomainJob},
           errors=(409,), idempotent=True)
async def setup(request: web.Request) -> web.StreamResponse:
    body = body_of(request, schema.DomainRef)
    key, digest = key_of(request)
    return render(await service.setup(request.app[CTX], principal_of(request), body.domain,
                                      key, digest))


@operation(routes, "GET", "/v1/domains", id="listDomains", tag="domains",
           summary="List the account's domains, each with its sending reputation",
           description="Oldest first. Each domain carries its reputation (sent, bounces, "
                       "complaints over the window, and the status healthy, watch or "
                       "blocked), counted for the whole page at once. Page with limit and "
                       "offset, or with cursor (next_cursor of the previous page).",
           permission="read", query=schema.DomainPage, answers={200: schema.DomainList})
async def list_domains(request: web.Request) -> web.StreamResponse:
    q = query_of(request, schema.DomainPage)
    return json_response(await service.list_page(request.app[CTX], principal_of(request),
                                                 q.limit, q.offset, q.cursor))


@operation(routes, "GET", "/v1/domains/{id}", id="getDomain", tag="domains",
           summary="One domain, with its sending reputation",
           description="The domain's state (status, last error, whether its name is "
                       "proven) and its sending reputation.",
           permission="read", answers={200: schema.Domain}, path_params=_ID)
async def get_domain(request: web.Request) -> web.StreamResponse:
    return json_response(await service.get(request.app[CTX], principal_of(request),
                                           request.match_info["id"]))


@operation(routes, "DELETE", "/v1/domains/{id}", id="deleteDomain", tag="domains",
           summary="Delete the domain: mailboxes, keys, and the DNS records mailforge owns",
           description="Queues the deletion: its mailboxes, aliases and DKIM keys, and the "
                       "DNS records mailforge created (never a record it does not own).",
           permission="write", answers={202: schema.DomainJob}, path_params=_ID)
async def delete_domain(request: web.Request) -> web.StreamResponse:
    return json_response(await service.delete(request.app[CTX], principal_of(request),
                                              request.match_info["id"]), status=202)

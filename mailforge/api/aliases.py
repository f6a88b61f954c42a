"""Alias endpoints: forwards from one address to one or more targets (internal or
external), catch-alls (``username: "*"``; a real mailbox always wins over it), and alias
domains (every mailbox name of one domain also at another). Each handler takes the
validated models, calls one function of ``service/aliases.py`` and renders."""

from __future__ import annotations

from aiohttp import web

from ..schema.aliases import (
    Alias,
    AliasChanged,
    AliasDeleted,
    AliasDomain,
    AliasDomains,
    AliasDomainSet,
    AliasFilters,
    AliasPage,
    AliasTargets,
    NewAlias,
)
from ..service import aliases as service
from .context import CTX
from .idempotency import key_of, render
from .operation import body_of, operation, principal_of, query_of
from .render import json_response

routes = web.RouteTableDef()

_ALIAS_ID = {"id": "The alias's id (ali_...)."}


@operation(routes, "POST", "/v1/aliases", id="createAlias", tag="aliases",
           summary="Create an alias (forward), or a catch-all with username \"*\"",
           description="Mail to username@domain goes to every target (addresses here or "
                       "elsewhere). The domain must be set up and not blocked by its "
                       "sending reputation; the address must be free (no mailbox, no "
                       "alias). A catch-all (\"*\") takes every name of the domain that no "
                       "mailbox or alias has. Answers at once; the job brings it to the "
                       "mail server.",
           permission="write", body=NewAlias, answers={202: AliasChanged}, errors=(409,),
           idempotent=True)
async def create_alias(request: web.Request) -> web.StreamResponse:
    body = body_of(request, NewAlias)
    return render(await service.create(
        request.app[CTX], principal_of(request), body.domain, body.username, body.targets,
        *key_of(request)))


@operation(routes, "GET", "/v1/aliases", id="listAliases", tag="aliases",
           summary="List aliases", description="The account's aliases (within the token's "
           "domain restriction) in address order, filtered by domain and text, paged by "
           "cursor or offset.", permission="read", query=AliasFilters,
           answers={200: AliasPage})
async def list_aliases(request: web.Request) -> web.StreamResponse:
    q = query_of(request, AliasFilters)
    page = await service.page(request.app[CTX], principal_of(request), q.domain or None,
                              q.search or None, q.limit, q.offset, q.cursor)
    return json_response({"aliases": page.items, "total": page.total, "limit": q.limit,
                          "offset": 0 if q.cursor else q.offset,
                          "next_cursor": page.next_cursor})


@operation(routes, "GET", "/v1/aliases/{id}", id="getAlias", tag="aliases",
           summary="Get an alias", description="One alias of the account.",
           permission="read", answers={200: Alias}, path_params=_ALIAS_ID)
async def get_alias(request: web.Request) -> web.StreamResponse:
    return json_response(await service.get(request.app[CTX], principal_of(request),
                                           request.match_info["id"]))


@operation(routes, "PATCH", "/v1/aliases/{id}", id="updateAlias", tag="aliases",
           summary="Replace an alias's targets", description="The new targets replace the "
           "old ones; an alias never forwards to itself. A refused request changes "
           "nothing.", permission="write", body=AliasTargets, answers={202: AliasChanged},
           errors=(409,), path_params=_ALIAS_ID)
async def update_alias(request: web.Request) -> web.StreamResponse:
    body = body_of(request, AliasTargets)
    return render(await service.replace_targets(request.app[CTX], principal_of(request),
                                                request.match_info["id"], body.targets))


@operation(routes, "DELETE", "/v1/aliases/{id}", id="deleteAlias", tag="aliases",
           summary="Delete an alias", description="The address stops forwarding once the "
           "job completes.", permission="write", answers={202: AliasDeleted},
           path_params=_ALIAS_ID)
async def delete_alias(request: web.Request) -> web.StreamResponse:
    return render(await service.delete(request.app[CTX], principal_of(request),
                                       request.match_info["id"]))


# ---------------------------------------------------------------------- alias domains


@operation(routes, "POST", "/v1/alias-domains", id="setAliasDomain", tag="aliases",
           summary="Make a domain an alias of another",
           description="Mail to any mailbox name at domain goes to the same name at target, "
                       "whose mailboxes may also send as it. Both must be domains of the "
                       "account, neither blocked by its sending reputation, and the target "
                       "not itself an alias domain; domain needs its own setup (MX) to "
                       "receive mail.",
           permission="write", body=AliasDomain, answers={202: AliasDomainSet},
           errors=(409,))
async def set_alias_domain(request: web.Request) -> web.StreamResponse:
    body = body_of(request, AliasDomain)
    return render(await service.set_alias_domain(request.app[CTX], principal_of(request),
                                                 body.domain, body.target))


@operation(routes, "GET", "/v1/alias-domains", id="listAliasDomains", tag="aliases",
           summary="List alias domains", description="Each alias domain of the account and "
           "its target (both within the token's domain restriction).", permission="read",
           answers={200: AliasDomains})
async def list_alias_domains(request: web.Request) -> web.StreamResponse:
    rows = await service.list_alias_domains(request.app[CTX], principal_of(request))
    return json_response({"alias_domains": rows})


@operation(routes, "DELETE", "/v1/alias-domains/{domain_id}", id="unsetAliasDomain",
           tag="aliases", summary="Stop a domain being an alias",
           description="The domain keeps its own mailboxes; names at it no longer reach the "
                       "target's.", permission="write", answers={202: AliasDomainSet},
           path_params={"domain_id": "The alias domain's id (dom_...)."})
async def unset_alias_domain(request: web.Request) -> web.StreamResponse:
    return render(await service.unset_alias_domain(request.app[CTX], principal_of(request),
                                                   request.match_info["domain_id"]))

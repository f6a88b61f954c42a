"""Alias endpoints: forwards from one address to one or more targets (internal or
external), catch-alls (``username: "*"``; a real mailbox always wins over it), and alias
domains (every mailbox name of one domain also at another)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import validation
from ..errors import ValidationFailed
from ..models import Alias
from ..store import aliases as alstore
from . import oas
from .context import CTX
from .domains import _resolve
from .email_users import require_not_blocked, require_ready
from .http import (
    authenticate,
    check_fields,
    json_body,
    list_filters,
    paging,
    rfc3339,
)
from .idempotency import idempotent

routes = web.RouteTableDef()

MAX_TARGETS = 50


def alias_json(a: Alias, domain: str) -> dict[str, Any]:
    return {
        "id": a.id,
        "address": a.address,
        "domain": domain,
        "domain_id": a.domain_id,
        "catch_all": a.address.startswith("@"),
        "targets": list(a.targets),
        "status": "active" if a.observed_generation >= a.generation else "pending",
        "last_error": a.last_error,
        "created_at": rfc3339(a.created_at),
        "updated_at": rfc3339(a.updated_at),
    }


def parse_targets(value: object, errs: list[str]) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TARGETS:
        errs.append(f"targets: must be a list of 1 to {MAX_TARGETS} addresses")
        return []
    out: list[str] = []
    for n, t in enumerate(value):
        try:
            local, dom = validation.email_address(t)
        except ValueError as exc:
            errs.append(f"targets[{n}]: {exc}")
            continue
        addr = f"{local}@{dom}"
        if addr in out:
            errs.append(f"targets[{n}]: {addr} is given twice")
        out.append(addr)
    return out


@routes.post("/v1/aliases")
async def create_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, {"domain", "username", "targets"},
                        {"domain", "username", "targets"})
    local = None
    if "username" in body:
        if body["username"] == "*":
            local = ""  # catch-all: "@domain"
        else:
            try:
                local = validation.local_part(body["username"])
            except ValueError as exc:
                errs.append(f"username: {exc} (or \"*\" for a catch-all)")
    targets = parse_targets(body.get("targets"), errs) if "targets" in body else []
    if errs or local is None:
        raise ValidationFailed(errs)
    domain = await _resolve(request, principal.account_id, body["domain"])
    require_ready(domain)
    await require_not_blocked(ctx, domain)
    address = f"{local}@{domain.name}"
    alstore.check_targets(address, targets)  # the store checks again, in its transaction

    async def produce() -> tuple[int, dict[str, Any]]:
        alias, job = await alstore.create_alias(ctx.store, principal.account_id, domain,
                                                address, targets)
        out = alias_json(alias, domain.name)
        out["job_id"] = job.id
        return 202, out

    return await idempotent(request, principal, body, produce)


@routes.get("/v1/aliases")
async def list_aliases(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    limit, offset = paging(request)
    domain, search, errs = list_filters(request)
    if errs:
        raise ValidationFailed(errs)
    items, total = await alstore.list_aliases(request.app[CTX].store, principal.account_id,
                                              domain, search, limit, offset)
    return web.json_response({"aliases": [alias_json(a, d) for a, d in items],
                              "total": total, "limit": limit, "offset": offset})


@routes.get("/v1/aliases/{id}")
async def get_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    a, d = await alstore.get_alias(request.app[CTX].store, principal.account_id,
                                   request.match_info["id"])
    return web.json_response(alias_json(a, d))


@routes.patch("/v1/aliases/{id}")
async def update_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"targets"}, {"targets"})
    targets = parse_targets(body.get("targets"), errs) if "targets" in body else []
    if errs:
        raise ValidationFailed(errs)
    # Every check (including "not forwarding to itself") runs in the store before the
    # row changes: a refused update changes nothing.
    a, d, job = await alstore.change_alias(request.app[CTX].store, principal.account_id,
                                           request.match_info["id"], targets)
    out = alias_json(a, d)
    out["job_id"] = job.id
    return web.json_response(out, status=202)


@routes.delete("/v1/aliases/{id}")
async def delete_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    a, _d, job = await alstore.change_alias(request.app[CTX].store, principal.account_id,
                                            request.match_info["id"], None)
    return web.json_response({"job_id": job.id, "status": "pending", "id": a.id},
                             status=202)


# ---------------------------------------------------------------------- alias domains


@routes.post("/v1/alias-domains")
async def set_alias_domain(request: web.Request) -> web.Response:
    """``{domain, target}``: mail to any mailbox name at *domain* goes to the same name
    at *target*, whose mailboxes may also send as it. Both must be connected domains of
    the account; *domain* needs its own setup (MX) to receive mail."""
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, {"domain", "target"}, {"domain", "target"})
    if errs:
        raise ValidationFailed(errs)
    domain = await _resolve(request, principal.account_id, body["domain"])
    try:
        target = await _resolve(request, principal.account_id, body["target"])
    except ValidationFailed as exc:
        raise ValidationFailed([d.replace("domain:", "target:", 1)
                                for d in exc.details]) from None
    # Either way round it would give a blocked domain's senders a new identity.
    await require_not_blocked(ctx, domain)
    await require_not_blocked(ctx, target)
    job = await alstore.set_alias_domain(ctx.store, principal.account_id, domain, target)
    return web.json_response({"job_id": job.id, "status": "pending", "domain": domain.name,
                              "target": target.name}, status=202)


@routes.get("/v1/alias-domains")
async def list_alias_domains(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    rows = await alstore.list_alias_domains(request.app[CTX].store, principal.account_id)
    return web.json_response({"alias_domains": rows})


@routes.delete("/v1/alias-domains/{domain_id}")
async def unset_alias_domain(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    domain = await ctx.store.domains.get(principal.account_id, request.match_info["domain_id"])
    job = await alstore.set_alias_domain(ctx.store, principal.account_id, domain, None)
    return web.json_response({"job_id": job.id, "status": "pending"}, status=202)


_ERRS = {str(code): oas.error(code) for code in oas.WRITE_ERRORS}
_ALIAS = {"type": "object", "properties": {
    "id": {"type": "string"}, "address": {"type": "string"}, "domain": {"type": "string"},
    "catch_all": {"type": "boolean"}, "targets": {"type": "array",
                                                  "items": {"type": "string"}},
    "status": {"type": "string"}, "job_id": {"type": "string"}}}
_TARGETS = {"type": "array", "minItems": 1, "maxItems": MAX_TARGETS,
            "items": {"type": "string"}}


def _ok(schema: dict[str, Any], desc: str = "OK") -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/aliases": {
        "post": {"summary": "Create an alias/forward (username \"*\": catch-all)",
                 "operationId": "createAlias",
                 "requestBody": _body({"type": "object", "additionalProperties": False,
                                       "required": ["domain", "username", "targets"],
                                       "properties": {"domain": {"type": "string"},
                                                      "username": {"type": "string"},
                                                      "targets": _TARGETS}}),
                 "responses": {"202": _ok(_ALIAS, "Accepted"), **_ERRS}},
        "get": {"summary": "List aliases", "operationId": "listAliases",
                "responses": {"200": _ok({"type": "object", "properties": {
                    "aliases": {"type": "array", "items": _ALIAS},
                    "total": {"type": "integer"}}}), **_ERRS}},
    },
    "/v1/aliases/{id}": {
        "get": {"summary": "Get an alias", "operationId": "getAlias", "parameters": _ID,
                "responses": {"200": _ok(_ALIAS), **_ERRS}},
        "patch": {"summary": "Replace an alias's targets", "operationId": "updateAlias",
                  "parameters": _ID,
                  "requestBody": _body({"type": "object", "additionalProperties": False,
                                        "required": ["targets"],
                                        "properties": {"targets": _TARGETS}}),
                  "responses": {"202": _ok(_ALIAS, "Accepted"), **_ERRS}},
        "delete": {"summary": "Delete an alias", "operationId": "deleteAlias",
                   "parameters": _ID,
                   "responses": {"202": _ok({"type": "object"}, "Accepted"), **_ERRS}},
    },
    "/v1/alias-domains": {
        "post": {"summary": "Make a domain an alias of another", "operationId":
                 "setAliasDomain",
                 "requestBody": _body({"type": "object", "additionalProperties": False,
                                       "required": ["domain", "target"],
                                       "properties": {"domain": {"type": "string"},
                                                      "target": {"type": "string"}}}),
                 "responses": {"202": _ok({"type": "object"}, "Accepted"), **_ERRS}},
        "get": {"summary": "List alias domains", "operationId": "listAliasDomains",
                "responses": {"200": _ok({"type": "object"}), **_ERRS}},
    },
    "/v1/alias-domains/{domain_id}": {"delete": {
        "summary": "Stop a domain being an alias", "operationId": "unsetAliasDomain",
        "parameters": [{"name": "domain_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"202": _ok({"type": "object"}, "Accepted"), **_ERRS}}},
}

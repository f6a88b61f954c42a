"""Alias endpoints: forwards from one address to one or more targets (internal or
external), catch-alls (``username: "*"``; a real mailbox always wins over it), and alias
domains (every mailbox name of one domain also at another)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import validation
from ..errors import ValidationFailed
from ..service import aliases as service
from ..service.aliases import MAX_TARGETS
from ..service.idempotency import fingerprint
from . import oas
from .context import CTX
from .http import (
    authenticate,
    check_fields,
    json_body,
    list_filters,
    paging,
)
from .idempotency import render
from .render import json_response

routes = web.RouteTableDef()


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
    key = request.headers.get("Idempotency-Key")
    digest = fingerprint(f"{request.method} {request.path}", body)
    return render(await service.create(request.app[CTX], principal, body["domain"], local,
                                       targets, key, digest))


@routes.get("/v1/aliases")
async def list_aliases(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    limit, offset = paging(request)
    _, search, errs = list_filters(request)
    if errs:
        raise ValidationFailed(errs)
    page = await service.page(request.app[CTX], principal,
                              request.query.get("domain") or None, search, limit, offset)
    return json_response({"aliases": page.items, "total": page.total, "limit": limit,
                          "offset": offset})


@routes.get("/v1/aliases/{id}")
async def get_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    return json_response(await service.get(request.app[CTX], principal,
                                           request.match_info["id"]))


@routes.patch("/v1/aliases/{id}")
async def update_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"targets"}, {"targets"})
    targets = parse_targets(body.get("targets"), errs) if "targets" in body else []
    if errs:
        raise ValidationFailed(errs)
    return render(await service.replace_targets(request.app[CTX], principal,
                                                request.match_info["id"], targets))


@routes.delete("/v1/aliases/{id}")
async def delete_alias(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    return render(await service.delete(request.app[CTX], principal,
                                       request.match_info["id"]))


# ---------------------------------------------------------------------- alias domains


@routes.post("/v1/alias-domains")
async def set_alias_domain(request: web.Request) -> web.Response:
    """``{domain, target}``: mail to any mailbox name at *domain* goes to the same name
    at *target*, whose mailboxes may also send as it. Both must be connected domains of
    the account; *domain* needs its own setup (MX) to receive mail."""
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"domain", "target"}, {"domain", "target"})
    if errs:
        raise ValidationFailed(errs)
    return render(await service.set_alias_domain(request.app[CTX], principal,
                                                 body["domain"], body["target"]))


@routes.get("/v1/alias-domains")
async def list_alias_domains(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    rows = await service.list_alias_domains(request.app[CTX], principal)
    return json_response({"alias_domains": rows})


@routes.delete("/v1/alias-domains/{domain_id}")
async def unset_alias_domain(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    return render(await service.unset_alias_domain(request.app[CTX], principal,
                                                   request.match_info["domain_id"]))

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

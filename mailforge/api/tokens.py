"""API token endpoints: create (the secret shown once), list, revoke.

Tokens carry permissions (``read``, ``write``, ``admin``), an optional expiry and an
optional restriction to a list of domains, which must be domains the account owns. A
token cannot mint a token with more reach than its own: a domain-restricted token
creates only tokens restricted to a subset of its domains.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from ..errors import ValidationFailed
from ..models import PERMISSIONS
from ..service import tokens as service
from ..service.tokens import MAX_EXPIRY_SECONDS, MAX_TOKEN_DOMAINS
from ..store.tokens import TokenInfo
from . import oas
from .context import CTX
from .http import authenticate, check_fields, json_body
from .idempotency import idempotent
from .render import json_response, rfc3339

routes = web.RouteTableDef()


def token_json(t: TokenInfo) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "permissions": list(t.permissions),
        "domains": list(t.domains) if t.domains is not None else None,
        "created_at": rfc3339(t.created_at),
        "expires_at": rfc3339(t.expires_at),
        "last_used_at": rfc3339(t.last_used_at),
    }


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be an RFC 3339 time")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an RFC 3339 time") from None
    if t.tzinfo is None:
        raise ValueError("must include a time zone (e.g. Z)")
    return t


def _parse(body: dict[str, Any]) -> service.NewToken:
    """The body's shape and types; the rules (lengths, expiry range, domains owned,
    no escalation) are the service's."""
    errs = check_fields(body, {"name", "permissions", "expires_at", "expires_in_seconds",
                               "domains"}, {"name", "permissions"})
    name = body.get("name")
    if "name" in body and not isinstance(name, str):
        errs.append("name: must be 1-100 printable characters")
    perms = body.get("permissions")
    if "permissions" in body and (not isinstance(perms, list) or not all(
            isinstance(p, str) for p in perms)):
        errs.append(f"permissions: must be a non-empty list of {', '.join(PERMISSIONS)}")
    expires_at = None
    if body.get("expires_at") is not None:
        try:
            expires_at = _parse_time(body["expires_at"])
        except ValueError as exc:
            errs.append(f"expires_at: {exc}")
    secs = body.get("expires_in_seconds")
    if secs is not None and (isinstance(secs, bool) or not isinstance(secs, int)):
        errs.append(f"expires_in_seconds: must be an integer from 1 to {MAX_EXPIRY_SECONDS}")
    domains = body.get("domains")
    if domains is not None and not isinstance(domains, list):
        errs.append(f"domains: must be a list of 1 to {MAX_TOKEN_DOMAINS} domain names")
    if "expires_at" in body and "expires_in_seconds" in body:
        errs.append("expires_in_seconds: give expires_at or expires_in_seconds, not both")
    if errs:
        raise ValidationFailed(errs)
    assert isinstance(name, str) and isinstance(perms, list)
    return service.NewToken(name=name, permissions=perms, expires_at=expires_at,
                            expires_in_seconds=secs, domains=domains)


@routes.post("/v1/auth/tokens")
async def create_token(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    body = await json_body(request)
    item = _parse(body)

    async def produce() -> tuple[int, dict[str, Any]]:
        made = await service.create_token(request.app[CTX], principal, item)
        return 201, {**token_json(made.info), "token": made.token}

    return await idempotent(request, principal, body, produce)


@routes.get("/v1/auth/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    tokens = await service.list_tokens(request.app[CTX], principal)
    return json_response({"tokens": [token_json(t) for t in tokens], "total": len(tokens)})


@routes.delete("/v1/auth/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    await service.revoke_token(request.app[CTX], principal, request.match_info["id"])
    return web.Response(status=204)


_TOKEN = oas.obj({
    "id": {"type": "string"},
    "name": {"type": "string"},
    "permissions": {"type": "array", "items": {"enum": list(PERMISSIONS)}},
    "domains": {"type": ["array", "null"], "items": {"type": "string"}},
    "created_at": oas.TIME,
    "expires_at": oas.TIME,
    "last_used_at": oas.TIME,
}, ("id", "name", "permissions", "created_at"))

openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/auth/tokens": {
        "post": {
            "summary": "Create an API token (the secret is shown only in this answer)",
            "operationId": "createToken",
            "tags": ["tokens"],
            "parameters": [oas.ACTING, oas.IDEMPOTENCY],
            "requestBody": oas.body(oas.obj({
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "permissions": {"type": "array", "minItems": 1,
                                "items": {"enum": list(PERMISSIONS)}},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
                "expires_in_seconds": {"type": ["integer", "null"], "minimum": 1,
                                       "maximum": 315360000},
                "domains": {"type": ["array", "null"], "minItems": 1,
                            "maxItems": MAX_TOKEN_DOMAINS, "items": {"type": "string"}},
            }, ("name", "permissions"), closed=True)),
            "responses": oas.responses(
                {"201": oas.ok("The token, with its secret `token` shown once.", {
                    **_TOKEN, "required": [*_TOKEN["required"], "token"],
                    "properties": {**_TOKEN["properties"], "token": {"type": "string"}}})},
                oas.WRITE_ERRORS),
        },
        "get": {
            "summary": "List the account's live tokens (never their secrets)",
            "operationId": "listTokens",
            "tags": ["tokens"],
            "parameters": [oas.ACTING],
            "responses": oas.responses({"200": oas.ok("Tokens.", oas.obj(
                {"tokens": {"type": "array", "items": _TOKEN},
                 "total": {"type": "integer"}}, ("tokens",)))}),
        },
    },
    "/v1/auth/tokens/{id}": {
        "delete": {
            "summary": "Revoke a token; it stops working on the next request",
            "operationId": "revokeToken",
            "tags": ["tokens"],
            "parameters": [oas.PATH_ID, oas.ACTING],
            "responses": oas.responses({"204": oas.ok("Revoked.")}),
        },
    },
}

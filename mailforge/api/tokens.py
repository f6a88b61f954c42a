"""API token endpoints: create (the secret shown once), list, revoke.

Tokens carry permissions (``read``, ``write``, ``admin``), an optional expiry and an
optional restriction to a list of domains, which must be domains the account owns. A
token cannot mint a token with more reach than its own: a domain-restricted token
creates only tokens restricted to a subset of its domains.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from .. import validation
from ..errors import ValidationFailed
from ..models import PERMISSIONS
from ..store import tenancy
from . import oas
from .context import CTX
from .errors import ApiError
from .http import authenticate, check_fields, json_body, rfc3339
from .idempotency import idempotent

routes = web.RouteTableDef()

MAX_TOKEN_DOMAINS = 100
MAX_EXPIRY = timedelta(days=3650)


def token_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "permissions": list(row["permissions"]),
        "domains": list(row["domains"]) if row["domains"] is not None else None,
        "created_at": rfc3339(row["created_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "last_used_at": rfc3339(row["last_used_at"]),
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


@routes.post("/v1/auth/tokens")
async def create_token(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    body = await json_body(request)
    errs = check_fields(body, {"name", "permissions", "expires_at", "expires_in_seconds",
                               "domains"}, {"name", "permissions"})
    name = body.get("name")
    if "name" in body and (not isinstance(name, str) or not 1 <= len(name.strip()) <= 100
                           or not name.isprintable()):
        errs.append("name: must be 1-100 printable characters")
    perms = body.get("permissions")
    if "permissions" in body:
        if (not isinstance(perms, list) or not perms
                or not all(isinstance(p, str) and p in PERMISSIONS for p in perms)):
            errs.append(f"permissions: must be a non-empty list of {', '.join(PERMISSIONS)}")
        else:
            perms = sorted(set(perms))
    now = datetime.now(UTC)
    expires: datetime | None = None
    if "expires_at" in body and "expires_in_seconds" in body:
        errs.append("expires_in_seconds: give expires_at or expires_in_seconds, not both")
    elif body.get("expires_at") is not None:
        try:
            expires = _parse_time(body["expires_at"])
            if not now < expires <= now + MAX_EXPIRY:
                errs.append("expires_at: must be in the future, within 10 years")
        except ValueError as exc:
            errs.append(f"expires_at: {exc}")
    elif body.get("expires_in_seconds") is not None:
        secs = body["expires_in_seconds"]
        if (isinstance(secs, bool) or not isinstance(secs, int)
                or not 1 <= secs <= MAX_EXPIRY.total_seconds()):
            errs.append("expires_in_seconds: must be an integer from 1 to 315360000")
        else:
            expires = now + timedelta(seconds=secs)
    domains: list[str] | None = None
    names: list[str] | None = None  # canonical, in request order (errors name domains[i])
    if body.get("domains") is not None:
        raw = body["domains"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TOKEN_DOMAINS:
            errs.append(f"domains: must be a list of 1 to {MAX_TOKEN_DOMAINS} domain names")
        else:
            names = []
            for i, item in enumerate(raw):
                try:
                    names.append(validation.domain_name(item))
                except ValueError as exc:
                    errs.append(f"domains[{i}]: {exc}")
            domains = sorted(set(names))
    if errs:
        raise ValidationFailed(errs)
    if principal.domains is not None:
        # No escalation: a restricted token mints only tokens within its restriction.
        outside = [d for d in (domains or []) if d not in principal.domains]
        if domains is None or outside:
            raise ApiError("forbidden", "A domain-restricted token can only create tokens "
                           "restricted to its own domains.",
                           [f"domains: {d} is outside this token's restriction"
                            for d in outside] or ["domains: is required for this token"],
                           status=403)
    assert isinstance(name, str) and isinstance(perms, list)

    async def produce() -> tuple[int, dict[str, Any]]:
        # The store refuses domains the account does not own, in the insert's transaction.
        # Minted by the calling token: revoked with it, never outliving it.
        row, secret = await tenancy.create_token(request.app[CTX].store, principal.account_id,
                                                 name.strip(), perms, names, expires,
                                                 principal.token_id)
        return 201, {**token_json(row), "token": secret}

    return await idempotent(request, principal, body, produce)


@routes.get("/v1/auth/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    rows = await tenancy.list_tokens(request.app[CTX].store, principal.account_id)
    if principal.domains is not None:
        # A restricted token sees only tokens within its own restriction.
        rows = [r for r in rows
                if r["domains"] is not None and set(r["domains"]) <= principal.domains]
    return web.json_response({"tokens": [token_json(r) for r in rows], "total": len(rows)})


@routes.delete("/v1/auth/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    store = request.app[CTX].store
    tid = request.match_info["id"]
    row = await tenancy.get_token(store, principal.account_id, tid)
    if principal.domains is not None and (
            row["domains"] is None or not set(row["domains"]) <= principal.domains):
        raise ApiError("not_found", "No such token.", status=404)
    await tenancy.revoke_token(store, principal.account_id, tid)
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

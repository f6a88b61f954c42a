"""API token endpoints: create (the secret shown once), list, revoke.

Tokens carry permissions (``read``, ``write``, ``admin``), an optional expiry and an
optional restriction to a list of domains, which must be domains the account owns. A
token cannot mint a token with more reach than its own: a domain-restricted token
creates only tokens restricted to a subset of its domains.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..schema.tenancy import CreatedTokenReply, NewTokenBody, TokenList, TokenReply
from ..service import tokens as service
from ..store.tokens import TokenInfo
from .context import CTX
from .http import BODY_KEY
from .idempotency import idempotent
from .operation import Raw, body_of, operation, principal_of, reply
from .render import rfc3339

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


@operation(routes, "POST", "/v1/auth/tokens", id="createToken", tag="tokens",
           summary="Create an API token (the secret is shown only in this answer)",
           description="A token of the caller's account with the given permissions, an "
                       "optional expiry and an optional restriction to domains of the "
                       "account. It is minted by the calling token: revoked with it and "
                       "never outliving it. A domain-restricted token creates only tokens "
                       "restricted to its own domains (403 otherwise).",
           permission="admin", body=NewTokenBody, answers={201: CreatedTokenReply},
           idempotent=True)
async def create_token(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    body = body_of(request, NewTokenBody)
    item = service.NewToken(name=body.name, permissions=list(body.permissions),
                            expires_at=body.expires_at,
                            expires_in_seconds=body.expires_in_seconds,
                            domains=body.domains)

    async def produce() -> tuple[int, dict[str, Any]]:
        made = await service.create_token(request.app[CTX], principal, item)
        return 201, {**token_json(made.info), "token": made.token}

    return await idempotent(request, principal, request[BODY_KEY], produce)


@operation(routes, "GET", "/v1/auth/tokens", id="listTokens", tag="tokens",
           summary="List the account's live tokens (never their secrets)",
           description="Every live (not revoked) token of the account, oldest first. A "
                       "domain-restricted token sees only tokens within its own domains.",
           permission="admin", answers={200: TokenList})
async def list_tokens(request: web.Request) -> web.StreamResponse:
    tokens = await service.list_tokens(request.app[CTX], principal_of(request))
    return reply(TokenList(tokens=[TokenReply.model_validate(token_json(t)) for t in tokens],
                           total=len(tokens)))


@operation(routes, "DELETE", "/v1/auth/tokens/{id}", id="revokeToken", tag="tokens",
           summary="Revoke a token; it stops working on the next request",
           description="Revokes the token and every token minted from it, directly or "
                       "not. A token of another account, or outside a restricted caller's "
                       "domains, is not found.",
           permission="admin", answers={204: Raw("Revoked.")},
           path_params={"id": "The token's id (tok_...)."})
async def revoke_token(request: web.Request) -> web.StreamResponse:
    await service.revoke_token(request.app[CTX], principal_of(request),
                               request.match_info["id"])
    return web.Response(status=204)

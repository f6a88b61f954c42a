"""Authentication of bearer tokens and their revocation: the two places a token
cache must follow (a revoked token is refused at once).

Tokens are managed by ``store/tokens.py`` (``Tokens``), accounts and the reseller tree
by ``store/accounts.py`` (``Accounts``); ``Tokens.revoke`` calls ``revoke_token`` here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .. import ids
from ..errors import NotFound
from ..models import Principal
from .queries import Q
from .store import Store, hash_secret, split_token


@dataclass(frozen=True)
class AuthResult:
    """What ``authenticate`` learnt: a principal, or why there is none (for logs)."""

    principal: Principal | None
    reason: str = ""


async def authenticate(store: Store, token: str) -> AuthResult:
    """Check a bearer token against its stored hash (constant-time compare)."""
    parts = split_token(token)
    if parts is None:
        return AuthResult(None, "malformed")
    tid, secret = parts
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.auth_token, tid)
        if row is None:
            hmac.compare_digest(hash_secret(secret), b"\0" * 32)  # same work either way
            return AuthResult(None, "unknown")
        if not hmac.compare_digest(bytes(row["secret_hash"]), hash_secret(secret)):
            return AuthResult(None, "mismatch")
        if row["revoked"]:
            return AuthResult(None, "revoked")
        if row["expired"]:
            return AuthResult(None, "expired")
        if row["account_status"] == "deleting":
            return AuthResult(None, "account deleted")
        if row["stale"]:
            # Recording every use would make each request a write; a minute is enough.
            await conn.execute(Q.touch_token, tid)
    doms = frozenset(row["domains"]) if row["domains"] is not None else None
    return AuthResult(Principal(token_id=tid, account_id=row["account_id"],
                                permissions=frozenset(row["permissions"]), domains=doms,
                                account_status=row["account_status"],
                                reseller=row["reseller"]))


async def revoke_token(store: Store, account_id: str, token_id: str) -> None:
    if not ids.has_prefix(token_id, "tok"):
        raise NotFound("token")
    async with store.pool.acquire() as conn:
        if await conn.fetchval(Q.revoke_token, account_id, token_id) is None:
            raise NotFound("token")

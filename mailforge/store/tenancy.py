"""Authentication of bearer tokens and their revocation: the two places a token
cache must follow (a revoked token is refused at once).

Tokens are managed by ``store/tokens.py`` (``Tokens``), accounts and the reseller tree
by ``store/accounts.py`` (``Accounts``); ``Tokens.revoke`` calls ``revoke_token`` here.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from dataclasses import dataclass

from .. import ids
from ..errors import NotFound
from ..models import Principal
from .queries import Q
from .store import Store, hash_secret, split_token
from .tokencache import Entry, TokenCache

# How often a token's last_used_at is written (at most once a minute per token).
TOUCH_SECONDS = 60.0


@dataclass(frozen=True)
class AuthResult:
    """What ``authenticate`` learnt: a principal, or why there is none (for logs)."""

    principal: Principal | None
    reason: str = ""


async def authenticate(store: Store, token: str,
                       cache: TokenCache | None = None) -> AuthResult:
    """Check a bearer token against its stored hash (constant-time compare).

    With *cache*, a token that authenticated in the last few seconds is answered from
    memory (the secret still checked against the stored hash, the expiry against the
    clock); see ``store/tokencache.py`` for why that is safe. Only successes are cached.
    """
    parts = split_token(token)
    if parts is None:
        return AuthResult(None, "malformed")
    tid, secret = parts
    digest = hash_secret(secret)
    if cache is not None:
        hit = cache.get(tid)
        if hit is not None:
            if not hmac.compare_digest(hit.secret_hash, digest):
                return AuthResult(None, "mismatch")
            if hit.expires_at is not None and hit.expires_at <= time.time():
                cache.drop(tid)
                return AuthResult(None, "expired")
            now = time.monotonic()
            if now - hit.touched >= TOUCH_SECONDS:
                # Recording every use would make each request a write; a minute is enough.
                cache.put(tid, dataclasses.replace(hit, touched=now), cache.generation)
                async with store.pool.acquire() as conn:
                    await conn.execute(Q.touch_token, tid)
            return AuthResult(hit.principal)
    generation = cache.generation if cache is not None else 0
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.auth_token, tid)
        if row is None:
            hmac.compare_digest(digest, b"\0" * 32)  # same work either way
            return AuthResult(None, "unknown")
        if not hmac.compare_digest(bytes(row["secret_hash"]), digest):
            return AuthResult(None, "mismatch")
        if row["revoked"]:
            return AuthResult(None, "revoked")
        if row["expired"]:
            return AuthResult(None, "expired")
        if row["account_status"] == "deleting":
            return AuthResult(None, "account deleted")
        if row["stale"]:
            await conn.execute(Q.touch_token, tid)
    doms = frozenset(row["domains"]) if row["domains"] is not None else None
    principal = Principal(token_id=tid, account_id=row["account_id"],
                          permissions=frozenset(row["permissions"]), domains=doms,
                          account_status=row["account_status"], reseller=row["reseller"])
    if cache is not None:
        now = time.monotonic()
        cache.put(tid, Entry(bytes(row["secret_hash"]), principal, row["expires_epoch"], now,
                             now), generation)
    return AuthResult(principal)


async def revoke_token(store: Store, account_id: str, token_id: str) -> None:
    if not ids.has_prefix(token_id, "tok"):
        raise NotFound("token")
    async with store.pool.acquire() as conn:
        if await conn.fetchval(Q.revoke_token, account_id, token_id) is None:
            raise NotFound("token")

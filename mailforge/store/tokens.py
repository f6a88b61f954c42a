"""API tokens: the stored form of a bearer token (a SHA-256 of its 256-bit secret), its
permissions, expiry, domain restriction and lineage (the token that minted it).

Every method takes the account id and every query filters on it. Authentication (the
lookup of a presented token) is ``tenancy.authenticate``; revocation's SQL is
``tenancy.revoke_token`` (both kept there: the token cache invalidates on them).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from .. import ids, validation
from ..errors import NotFound, Unauthorized, ValidationFailed
from .db import Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn
    from .store import Store

TOKEN_PREFIX = "mf_"  # noqa: S105 - a prefix, not a secret
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,128}")  # token_urlsafe output, matched in full


def hash_secret(secret: str) -> bytes:
    # Tokens carry 256 random bits, so a fast hash is enough; a slow KDF would only
    # add latency to every request.
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, str] | None:
    """``mf_<token id>.<secret>`` -> (token id, secret)."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token or len(token) > 200:
        return None
    tid, _, secret = token[len(TOKEN_PREFIX):].partition(".")
    if not ids.has_prefix(tid, "tok") or not _SECRET.fullmatch(secret):
        return None
    return tid, secret


@dataclass(frozen=True)
class TokenInfo:
    """A live token as listed: never its secret."""

    id: str
    name: str
    permissions: tuple[str, ...]
    domains: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    def within(self, domains: frozenset[str] | None) -> bool:
        """Is this token's reach inside the restriction *domains* (None: unrestricted)?
        An unrestricted token is inside no restriction."""
        if domains is None:
            return True
        return self.domains is not None and set(self.domains) <= domains


def _info(row: Any) -> TokenInfo:
    return TokenInfo(id=row["id"], name=row["name"], permissions=tuple(row["permissions"]),
                     domains=tuple(row["domains"]) if row["domains"] is not None else None,
                     created_at=row["created_at"], expires_at=row["expires_at"],
                     last_used_at=row["last_used_at"])


class Tokens(Repository):
    async def create(self, account_id: str, name: str, permissions: Sequence[str],
                     domains: Sequence[str] | None = None,
                     expires_at: datetime | None = None) -> tuple[str, str, datetime]:
        """Create a token; returns (id, secret token string shown once, created_at).

        Low level: the domain restriction is stored as given (tests and tools).
        Tenant-facing paths (the API, the CLI) use ``create_owned``, which refuses
        domains the account does not own."""
        async with self.db.tx() as conn:
            return await self.insert(conn, account_id, name, permissions, domains,
                                     expires_at)

    async def create_owned(self, account_id: str, name: str, permissions: Sequence[str],
                           domains: Sequence[str] | None,
                           expires_at: datetime | None = None,
                           minted_by: str | None = None) -> tuple[TokenInfo, str]:
        """Create a token whose domain restriction names only domains the account owns
        (checked in the same transaction as the insert); returns (the token, its secret
        string shown once). *domains* in request order: a refused one is reported as
        ``domains[i]``."""
        restriction = None
        async with self.db.tx() as conn:
            if domains is not None:
                canon = []
                errs = []
                for i, d in enumerate(domains):
                    try:
                        canon.append(validation.domain_name(d))
                    except ValueError as exc:
                        errs.append(f"domains[{i}]: {exc}")
                if errs:
                    raise ValidationFailed(errs)
                # Shares the account row lock with connect, so a domain being connected
                # or deleted right now is seen in its final state.
                if await conn.fetchrow(Q.lock_account, account_id) is None:
                    raise NotFound("account")
                owned = {r["name"] for r in await conn.fetch(Q.owned_domain_names,
                                                             account_id, canon)}
                errs = [f"domains[{i}]: {n} is not a domain of this account"
                        for i, n in enumerate(canon) if n not in owned]
                if errs:
                    raise ValidationFailed(errs)
                restriction = sorted(set(canon))
            tid, secret, _ = await self.insert(conn, account_id, name, permissions,
                                               restriction, expires_at, minted_by)
            row = await conn.fetchrow(Q.get_token_meta, account_id, tid)
        assert row is not None
        return _info(row), secret

    async def insert(self, conn: Conn, account_id: str, name: str,
                     permissions: Sequence[str], domains: Sequence[str] | None,
                     expires_at: datetime | None, minted_by: str | None = None
                     ) -> tuple[str, str, datetime]:
        """Insert a token on the caller's transaction. *minted_by*: the token creating it
        (None for the operator's CLI): the new token is revoked with it and never
        outlives it, so a stolen short-lived token cannot mint itself a lasting one.
        Without an expiry of its own the new token takes the minting token's; a later
        one is refused."""
        if minted_by is not None:
            parent = await conn.fetchrow(Q.minting_token, minted_by)
            if parent is None or parent["revoked_at"] is not None:
                raise Unauthorized("unauthorized", "Missing or invalid bearer token.")
            limit = parent["expires_at"]
            if limit is not None:
                if expires_at is None:
                    expires_at = limit
                elif expires_at > limit:
                    raise ValidationFailed([
                        "expires_at: must not be later than the expiry of the token "
                        f"creating it ({limit.isoformat(timespec='seconds')})"])
        tid = ids.new_id("tok")
        secret = secrets.token_urlsafe(32)
        created = await conn.fetchval(Q.insert_token, tid, account_id, name,
                                      hash_secret(secret), list(permissions),
                                      list(domains) if domains is not None else None,
                                      expires_at, minted_by)
        return tid, f"{TOKEN_PREFIX}{tid}.{secret}", created

    async def list(self, account_id: str) -> list[TokenInfo]:
        """The account's live (not revoked) tokens, oldest first."""
        async with self.pool.acquire() as conn:
            return [_info(r) for r in await conn.fetch(Q.list_tokens, account_id)]

    async def get(self, account_id: str, token_id: str) -> TokenInfo:
        """A live token of the account, else 404 (another account's is not found)."""
        if not ids.has_prefix(token_id, "tok"):
            raise NotFound("token")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_token_meta, account_id, token_id)
        if row is None:
            raise NotFound("token")
        return _info(row)

    async def revoke(self, account_id: str, token_id: str) -> None:
        """Revoke the token and every token minted from it (``tenancy.revoke_token``,
        kept there beside authentication: the token cache is invalidated from it)."""
        from .tenancy import revoke_token  # tenancy imports store.py, which imports us

        await revoke_token(cast("Store", self.db), account_id, token_id)

    async def object_allowed(self, account_id: str, object_id: str,
                             domains: frozenset[str]) -> bool:
        """Is the domain, mailbox, alias or job *object_id* of the account within the
        restriction *domains*? Ids of other kinds are not domain objects: allowed here
        (their handlers decide). The guard in front of every handler of a restricted
        token; the store applies the restriction again in each query."""
        kind = object_id.split("_", 1)[0]
        if kind in ("dom", "usr", "ali", "job") and not ids.has_prefix(object_id, kind):
            return False  # malformed: no such object (and NUL never reaches SQL)
        async with self.pool.acquire() as conn:
            if object_id.startswith(("dom_", "usr_", "ali_")):
                name = await conn.fetchval(Q.domain_of_object, object_id, account_id)
                return name is not None and name in domains
            if object_id.startswith("job_"):
                return bool(await conn.fetchval(Q.job_in_domains, object_id,
                                                sorted(domains)))
        return True

"""API tokens: create (the secret shown once), list, revoke; for the API and the
operator's CLI alike.

Rules: a token's domain restriction names only domains of its account (checked in the
insert's transaction); a token never mints one with more reach than its own (a
domain-restricted token only tokens restricted to a subset of its domains), nor one
outliving it (``Tokens.insert``); a restricted token sees and revokes only tokens
within its own restriction. The CLI acts as the operator (``operator``): no minting
token, no restriction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .. import validation
from ..errors import Forbidden, NotFound, ValidationFailed
from ..models import PERMISSIONS, Principal
from ..store.tokens import TokenInfo
from .context import ServiceContext

MAX_TOKEN_DOMAINS = 100
MAX_EXPIRY = timedelta(days=3650)
MAX_EXPIRY_SECONDS = int(MAX_EXPIRY.total_seconds())


def operator(account_id: str) -> Principal:
    """The operator at the console (``mailforge token ...``): an admin of *account_id*
    holding no token (so the tokens it creates are minted by none)."""
    return Principal(token_id="", account_id=account_id, permissions=frozenset({"admin"}))


@dataclass(frozen=True)
class NewToken:
    """A token to create. ``domains``: names as given (errors name ``domains[i]``);
    ``expires_at`` or ``expires_in_seconds``, not both."""

    name: str
    permissions: list[str]
    expires_at: datetime | None = None
    expires_in_seconds: int | None = None
    domains: list[str] | None = None


@dataclass(frozen=True)
class CreatedToken:
    info: TokenInfo
    # The bearer token string, shown in this answer only.
    token: str


def _expiry(item: NewToken, now: datetime, errs: list[str]) -> datetime | None:
    if item.expires_at is not None and item.expires_in_seconds is not None:
        errs.append("expires_in_seconds: give expires_at or expires_in_seconds, not both")
    elif item.expires_at is not None:
        if item.expires_at.tzinfo is None:
            errs.append("expires_at: must include a time zone (e.g. Z)")
        elif not now < item.expires_at <= now + MAX_EXPIRY:
            errs.append("expires_at: must be in the future, within 10 years")
        else:
            return item.expires_at
    elif item.expires_in_seconds is not None:
        if not 1 <= item.expires_in_seconds <= MAX_EXPIRY_SECONDS:
            errs.append("expires_in_seconds: must be an integer from 1 to "
                        f"{MAX_EXPIRY_SECONDS}")
        else:
            return now + timedelta(seconds=item.expires_in_seconds)
    return None


def _check(item: NewToken, now: datetime
           ) -> tuple[str, list[str], datetime | None, list[str] | None]:
    """(name, permissions sorted, expiry, canonical domains in request order), or 400
    naming every bad field."""
    errs: list[str] = []
    name = item.name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        errs.append("name: must be 1-100 printable characters")
    if not item.permissions or not all(p in PERMISSIONS for p in item.permissions):
        errs.append(f"permissions: must be a non-empty list of {', '.join(PERMISSIONS)}")
    expires = _expiry(item, now, errs)
    names: list[str] | None = None
    if item.domains is not None:
        if not 1 <= len(item.domains) <= MAX_TOKEN_DOMAINS:
            errs.append(f"domains: must be a list of 1 to {MAX_TOKEN_DOMAINS} domain names")
        else:
            names = []
            for i, raw in enumerate(item.domains):
                try:
                    names.append(validation.domain_name(raw))
                except ValueError as exc:
                    errs.append(f"domains[{i}]: {exc}")
    if errs:
        raise ValidationFailed(errs)
    return name, sorted(set(item.permissions)), expires, names


async def create_token(ctx: ServiceContext, principal: Principal,
                       item: NewToken) -> CreatedToken:
    """A token of the principal's account, minted by the principal's token."""
    name, perms, expires, names = _check(item, datetime.now(UTC))
    if principal.domains is not None:
        # No escalation: a restricted token mints only tokens within its restriction.
        outside = [d for d in (names or []) if d not in principal.domains]
        if names is None or outside:
            raise Forbidden("forbidden", "A domain-restricted token can only create tokens "
                            "restricted to its own domains.",
                            [f"domains: {d} is outside this token's restriction"
                             for d in outside] or ["domains: is required for this token"])
    # The store refuses domains the account does not own, in the insert's transaction.
    info, secret = await ctx.store.tokens.create_owned(
        principal.account_id, name, perms, names, expires, principal.token_id or None)
    return CreatedToken(info, secret)


async def list_tokens(ctx: ServiceContext, principal: Principal) -> list[TokenInfo]:
    """The account's live tokens; a restricted token sees only those within its own
    restriction."""
    tokens = await ctx.store.tokens.list(principal.account_id)
    return [t for t in tokens if t.within(principal.domains)]


async def revoke_token(ctx: ServiceContext, principal: Principal, token_id: str) -> None:
    """Revoke a token of the account (and every token minted from it); a restricted
    token revokes only tokens within its own restriction (others are not found)."""
    info = await ctx.store.tokens.get(principal.account_id, token_id)
    if not info.within(principal.domains):
        raise NotFound("token")
    await ctx.store.tokens.revoke(principal.account_id, token_id)

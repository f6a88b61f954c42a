"""Webhooks as service functions: register (the signing secret is shown once), list,
delete, and read a webhook's recent deliveries.

Webhooks are account-wide: they carry events of every domain of the account, so a token
restricted to some of its domains may not manage them (it would read the other domains'
mail through them): 403, checked here for every operation. Receivers are tenant-given:
a URL the outbound guard refuses is a 400 naming ``url`` (the dispatcher checks every
delivery again).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import netguard, paging, webhooks
from ..errors import Forbidden, ValidationFailed
from ..models import Principal
from ..store.webhooks import Delivery, Webhook
from . import idempotency
from .context import ServiceContext


def _rfc3339(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.isoformat(timespec="seconds")).replace("+00:00", "Z")


def webhook_json(w: Webhook) -> dict[str, Any]:
    return {"id": w.id, "url": w.url, "events": list(w.events),
            "created_at": _rfc3339(w.created_at)}


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "event_id": d.event_id, "event": d.event, "state": d.state,
            "attempts": d.attempts, "last_status": d.last_status,
            "last_error": d.last_error, "created_at": _rfc3339(d.created_at),
            "delivered_at": _rfc3339(d.delivered_at),
            "next_attempt_at": _rfc3339(d.next_attempt_at)}


def _account_wide(principal: Principal) -> None:
    if principal.domains is not None:
        raise Forbidden("forbidden", "This token is restricted to some domains; this "
                        "operation concerns the whole account.")


async def create(ctx: ServiceContext, principal: Principal, url: str,
                 events: Sequence[str] | None, key: str | None,
                 digest: bytes) -> idempotency.Answer:
    """Register *url* for *events* (default: all): 201 with the secret, shown once."""
    _account_wide(principal)
    errs = netguard.validate_url(url, netguard.Guard.from_config(
        ctx.cfg.outbound.allow_networks))
    if errs:
        raise ValidationFailed(errs)
    chosen = list(webhooks.EVENTS) if events is None else list(events)

    async def produce() -> idempotency.Answer:
        wid = webhooks.new_webhook_id()
        secret = webhooks.new_secret()
        sealed = ctx.box.seal(secret.encode(), webhooks.secret_context(wid))
        hook = await ctx.store.webhooks.create(wid, principal.account_id, url, chosen,
                                               sealed)
        return idempotency.Answer(201, {**webhook_json(hook), "secret": secret})

    return await idempotency.idempotent(ctx, principal, key, digest, produce)


_CURSOR_BAD = "cursor: not a cursor of this list (use next_cursor as given)"


async def list_webhooks(ctx: ServiceContext, principal: Principal, limit: int, offset: int,
                        cursor: str | None) -> dict[str, Any]:
    """A page of the account's webhooks, oldest first, with the list's paging fields."""
    _account_wide(principal)
    after = None
    if cursor is not None:
        at, wid = paging.decode(cursor, "webhooks", 2)
        try:
            after = (datetime.fromisoformat(str(at)), str(wid))
        except ValueError:
            raise ValidationFailed([_CURSOR_BAD]) from None
        if after[0].tzinfo is None or not isinstance(wid, str):
            raise ValidationFailed([_CURSOR_BAD])
    hooks, total, more = await ctx.store.webhooks.of_account(principal.account_id, limit,
                                                             offset, after)
    last = hooks[-1] if hooks and more else None
    return {"webhooks": [webhook_json(w) for w in hooks], "total": total, "limit": limit,
            "offset": 0 if cursor is not None else offset,
            "next_cursor": None if last is None else paging.encode(
                "webhooks", [last.created_at.isoformat(), last.id])}


async def delete(ctx: ServiceContext, principal: Principal, webhook_id: str) -> None:
    _account_wide(principal)
    await ctx.store.webhooks.delete(principal.account_id, webhook_id)


async def deliveries(ctx: ServiceContext, principal: Principal, webhook_id: str,
                     limit: int, offset: int, cursor: str | None) -> dict[str, Any]:
    """A page of the webhook's deliveries, newest first, with the paging fields."""
    _account_wide(principal)
    before = None
    if cursor is not None:
        (value,) = paging.decode(cursor, f"deliveries:{webhook_id}", 1)
        if not isinstance(value, int):
            raise ValidationFailed([_CURSOR_BAD])
        before = value
    found, total, more = await ctx.store.webhooks.deliveries(
        principal.account_id, webhook_id, limit, offset, before)
    return {"deliveries": [delivery_json(d) for d in found], "total": total,
            "limit": limit, "offset": 0 if cursor is not None else offset,
            "next_cursor": paging.encode(f"deliveries:{webhook_id}", [found[-1].id])
            if found and more else None}

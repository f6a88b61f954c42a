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
from typing import Any

from .. import netguard, webhooks
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


async def list_webhooks(ctx: ServiceContext, principal: Principal) -> list[Webhook]:
    _account_wide(principal)
    return await ctx.store.webhooks.of_account(principal.account_id)


async def delete(ctx: ServiceContext, principal: Principal, webhook_id: str) -> None:
    _account_wide(principal)
    await ctx.store.webhooks.delete(principal.account_id, webhook_id)


async def deliveries(ctx: ServiceContext, principal: Principal, webhook_id: str,
                     limit: int) -> list[Delivery]:
    """The latest *limit* deliveries of the webhook, newest first."""
    _account_wide(principal)
    return await ctx.store.webhooks.deliveries(principal.account_id, webhook_id, limit)

"""Mail through the API as service functions: send as a mailbox, list a folder, read a
message's body and attachments, mark it read, the sending quota and warm-up, and a
domain's reputation.

The rules live here once: mail through the API must be running (503); the
``Idempotency-Key`` of a send is checked first; the mailbox is found only within the
caller's account and the token's domain restriction (404 for anything else, message ids
included: a message id names its mailbox, looked up the same way); then readiness, the
reputation guard and the daily quota (``MailService``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from .. import reputation
from ..errors import NotFound, Unavailable
from ..mail import compose, limits
from ..mail.msgid import MessageRef
from ..mail.service import MailService
from ..models import Principal
from ..store.mail import Sender, SendingChange
from . import idempotency
from .context import ServiceContext


def _mail(ctx: ServiceContext) -> MailService:
    if ctx.mail is None:
        raise Unavailable("mail_unavailable", "Mail through the API is not running.")
    return ctx.mail


async def _sender(ctx: ServiceContext, principal: Principal, mailbox_id: str,
                  what: str = "email user") -> Sender:
    return await ctx.store.senders.get(principal.account_id, mailbox_id, principal.domains,
                                       limits.utc_today(), what)


async def _message(ctx: ServiceContext, principal: Principal,
                   msg_id: str) -> tuple[MailService, Sender, MessageRef]:
    """The mailbox a message id points into, looked up like a mailbox id (another
    account's, a tombstone, outside the restriction: all 404 ``message``)."""
    mail = _mail(ctx)
    ref = mail.ref(msg_id)
    return mail, await _sender(ctx, principal, ref.mailbox_id, "message"), ref


# ------------------------------------------------------------------ send


async def send(ctx: ServiceContext, principal: Principal, mailbox_id: str,
               req: compose.SendRequest, key: str | None,
               digest: bytes) -> idempotency.Answer:
    """Send *req* as the mailbox: 200 ``{message_id, status, remaining}``. With an
    Idempotency-Key (*key*, bound to the request by *digest*) a retry gets the first
    answer, even if the mailbox, its quota or its domain's reputation changed meanwhile:
    the key is checked first, the mailbox looked up (scoped) and its state judged only
    when the request runs."""
    mail = _mail(ctx)

    async def produce() -> idempotency.Answer:
        sender = await _sender(ctx, principal, mailbox_id)
        return idempotency.Answer(200, await mail.send(sender, req))

    return await idempotency.idempotent(ctx, principal, key, digest, produce)


# ------------------------------------------------------------------ read


async def list_messages(ctx: ServiceContext, principal: Principal, mailbox_id: str,
                        folder: str, unread_only: bool, limit: int, offset: int,
                        cursor: str | None = None) -> dict[str, Any]:
    """A page of a folder's messages, newest first, with the list's paging fields."""
    mail = _mail(ctx)
    sender = await _sender(ctx, principal, mailbox_id)
    return await mail.list(sender, folder, unread_only, limit, offset, cursor)


async def message_body(ctx: ServiceContext, principal: Principal,
                       msg_id: str) -> dict[str, Any]:
    """The decoded text and HTML bodies (``body``: the text, else the HTML)."""
    mail, sender, ref = await _message(ctx, principal, msg_id)
    msg = compose.parse(await mail.raw(sender, ref))
    text, html = compose.bodies(msg)
    return {"id": msg_id, "body": text if text is not None else (html or ""),
            "text": text, "html": html,
            "subject": compose.header_text(msg.get("Subject")),
            "message_id": compose.header_text(msg.get("Message-ID"))}


async def list_attachments(ctx: ServiceContext, principal: Principal,
                           msg_id: str) -> list[dict[str, Any]]:
    mail, sender, ref = await _message(ctx, principal, msg_id)
    found = compose.attachments(compose.parse(await mail.raw(sender, ref)))
    return [{"index": n, "filename": name, "content_type": ctype, "size": len(data),
             "url": f"/v1/inbox/{msg_id}/attachments/{n}"}
            for n, (name, ctype, data) in enumerate(found)]


@dataclass(frozen=True)
class AttachmentData:
    # A file name safe in a Content-Disposition header (the sender chose the original).
    filename: str
    content_type: str
    data: bytes


async def attachment(ctx: ServiceContext, principal: Principal, msg_id: str,
                     n: int) -> AttachmentData:
    mail, sender, ref = await _message(ctx, principal, msg_id)
    items = compose.attachments(compose.parse(await mail.raw(sender, ref)))
    if n >= len(items):
        raise NotFound("attachment")
    name, ctype, data = items[n]
    safe = re.sub(r'[^A-Za-z0-9._ -]', "_", name)[:200] or "attachment"
    return AttachmentData(safe, ctype, data)


async def mark(ctx: ServiceContext, principal: Principal, msg_id: str,
               read: bool) -> dict[str, Any]:
    mail, sender, ref = await _message(ctx, principal, msg_id)
    await mail.set_read(sender, ref, read)
    return {"id": msg_id, "is_read": read}


# ------------------------------------------------------------------ quota and warm-up


@dataclass(frozen=True)
class WarmupInput:
    """A warm-up as a client gives it; a field left out takes the server's default
    (``mail.warmup_start``, ``mail.warmup_days``, today)."""

    start_limit: int | None = None
    days: int | None = None
    started_on: date | None = None


@dataclass(frozen=True)
class SendingUpdate:
    """``PUT /sending``: only the fields given change (``set_*``); a null limit means
    the server's default, a null warm-up none."""

    set_limit: bool = False
    daily_send_limit: int | None = None
    set_warmup: bool = False
    warmup: WarmupInput | None = None


async def get_sending(ctx: ServiceContext, principal: Principal,
                      mailbox_id: str) -> dict[str, Any]:
    """The mailbox's daily limit, warm-up and today's count."""
    mail = _mail(ctx)
    return mail.quota(await _sender(ctx, principal, mailbox_id))


async def set_sending(ctx: ServiceContext, principal: Principal, mailbox_id: str,
                      update: SendingUpdate) -> dict[str, Any]:
    """Change the daily limit and/or the warm-up; the quota as it is then."""
    mail = _mail(ctx)
    m = ctx.cfg.mail
    warmup = None
    if update.warmup is not None:
        w = update.warmup
        warmup = limits.Warmup(m.warmup_start if w.start_limit is None else w.start_limit,
                               m.warmup_days if w.days is None else w.days,
                               w.started_on or limits.utc_today())
    await ctx.store.sending.change(principal.account_id, mailbox_id, principal.domains,
                                   SendingChange(update.set_limit, update.daily_send_limit,
                                                 update.set_warmup, warmup))
    return mail.quota(await _sender(ctx, principal, mailbox_id))


# ------------------------------------------------------------------ reputation


async def domain_reputation(ctx: ServiceContext, principal: Principal,
                            domain_id: str) -> dict[str, Any]:
    """A domain's sending reputation over the window (``reputation.py``)."""
    d, counts = await ctx.store.domains.get_with_reputation(
        principal.account_id, domain_id, ctx.cfg.reputation.window_days)
    rep = reputation.of_counts(counts, ctx.cfg.reputation).as_json()
    return {"domain_id": d.id, "domain": d.name, **rep}

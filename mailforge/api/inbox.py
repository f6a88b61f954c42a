"""Mail through the API: send, list, read bodies and attachments, mark read/unread,
sending quota and warm-up, domain reputation, and webhooks. Each operation is declared
with its models (``schema/mail.py``, ``schema/webhooks.py``); its handler takes the
typed values, calls one service function (``service/mail.py``, ``service/webhooks.py``)
and renders."""

from __future__ import annotations

from datetime import date

from aiohttp import web

from ..errors import ValidationFailed
from ..schema.common import Page
from ..schema.mail import (
    Attachments,
    DomainReputation,
    InboxQuery,
    Marked,
    MessageBody,
    Messages,
    Quota,
    SendingSettings,
    SendMessage,
    Sent,
)
from ..schema.webhooks import Deliveries, NewWebhook, NewWebhookSecret, Webhooks
from ..service import mail as mail_service
from ..service import webhooks as webhook_service
from .context import CTX
from .idempotency import key_of, render
from .operation import Raw, body_of, operation, principal_of, query_of
from .render import json_response

routes = web.RouteTableDef()

MAILBOX = {"id": "The email user's id (usr_...)."}
MESSAGE = {"msg_id": "The message's id (msg_..., from the inbox list)."}


@operation(routes, "POST", "/v1/email-users/{id}/inbox/send", id="sendMail", tag="mail",
           summary="Send a message as the mailbox",
           description="Composes the message (display name, signature, a text part for an "
                       "HTML body, threading headers, attachments), submits it through the "
                       "mail server (so it is DKIM-signed and counted against the daily "
                       "limit, with SMTP sends) and keeps a copy in Sent. Recipients may be "
                       "name-addr forms and address lists, e.g. the from of an inbox "
                       "message. 409 when the mailbox is not active or its domain is "
                       "blocked by its reputation, 429 with Retry-After at the daily limit, "
                       "502 when the mail server refuses the message. The answer carries "
                       "X-Send-Limit-Remaining.",
           permission="write", body=SendMessage, answers={200: Sent},
           errors=(409, 429, 502), idempotent=True, path_params=MAILBOX)
async def send(request: web.Request) -> web.StreamResponse:
    req = body_of(request, SendMessage).to_request()
    answer = await mail_service.send(request.app[CTX], principal_of(request),
                                     request.match_info["id"], req, *key_of(request))
    resp = render(answer)
    if "remaining" in answer.body:
        resp.headers["X-Send-Limit-Remaining"] = str(answer.body["remaining"])
    return resp


@operation(routes, "GET", "/v1/email-users/{id}/inbox", id="listInbox", tag="mail",
           summary="List a folder's messages, newest first",
           description="The messages of a folder (INBOX by default) with their headers, "
                       "read flag and threading fields, newest first and paged (offset, or "
                       "next_cursor passed back as cursor). 409 when the mailbox is not "
                       "active; 404 for a folder it does not have.",
           permission="read", query=InboxQuery, answers={200: Messages}, errors=(409,),
           path_params=MAILBOX)
async def list_inbox(request: web.Request) -> web.StreamResponse:
    q = query_of(request, InboxQuery)
    return json_response(await mail_service.list_messages(
        request.app[CTX], principal_of(request), request.match_info["id"], q.folder,
        q.unread, q.limit, q.offset, q.cursor))


@operation(routes, "GET", "/v1/email-users/{id}/sending", id="getSending", tag="mail",
           summary="The daily send limit, warm-up and today's count",
           description="The mailbox's own daily limit (or the server's default), the "
                       "warm-up schedule, today's limit with the warm-up applied, what it "
                       "sent today (API and SMTP alike) and when the count resets.",
           permission="read", answers={200: Quota}, path_params=MAILBOX)
async def get_sending(request: web.Request) -> web.StreamResponse:
    return json_response(await mail_service.get_sending(
        request.app[CTX], principal_of(request), request.match_info["id"]))


@operation(routes, "PUT", "/v1/email-users/{id}/sending", id="putSending", tag="mail",
           summary="Set the daily send limit and the warm-up schedule",
           description="Only the fields given change: daily_send_limit (null: the "
                       "server's default) and warmup (null: none; its fields left out take "
                       "the server's defaults). Answers the quota as it is then.",
           permission="write", body=SendingSettings, answers={200: Quota},
           path_params=MAILBOX)
async def put_sending(request: web.Request) -> web.StreamResponse:
    settings = body_of(request, SendingSettings)
    given = settings.model_fields_set
    warmup = None
    if settings.warmup is not None:
        w = settings.warmup
        warmup = mail_service.WarmupInput(
            w.start_limit, w.days, None if w.started_on is None else
            date.fromisoformat(w.started_on))
    update = mail_service.SendingUpdate("daily_send_limit" in given,
                                        settings.daily_send_limit, "warmup" in given, warmup)
    return json_response(await mail_service.set_sending(
        request.app[CTX], principal_of(request), request.match_info["id"], update))


@operation(routes, "GET", "/v1/inbox/{msg_id}/body", id="getMessageBody", tag="mail",
           summary="A message's text and HTML body, decoded",
           description="Decoded from any charset and transfer encoding; body is the text "
                       "part, else the HTML one.",
           permission="read", answers={200: MessageBody}, errors=(409,),
           path_params=MESSAGE)
async def body(request: web.Request) -> web.StreamResponse:
    return json_response(await mail_service.message_body(
        request.app[CTX], principal_of(request), request.match_info["msg_id"]))


@operation(routes, "GET", "/v1/inbox/{msg_id}/attachments", id="listAttachments",
           tag="mail", summary="A message's attachments",
           description="Each attachment's index, file name, type, size and download URL.",
           permission="read", answers={200: Attachments}, errors=(409,),
           path_params=MESSAGE)
async def attachments(request: web.Request) -> web.StreamResponse:
    items = await mail_service.list_attachments(request.app[CTX], principal_of(request),
                                                request.match_info["msg_id"])
    return json_response({"attachments": items})


@operation(routes, "GET", "/v1/inbox/{msg_id}/attachments/{n}", id="getAttachment",
           tag="mail", summary="Download one attachment",
           description="The attachment's bytes, as a download (Content-Disposition: "
                       "attachment, never rendered inline).",
           permission="read",
           answers={200: Raw("The attachment's bytes.", "application/octet-stream")},
           errors=(409,),
           path_params={**MESSAGE, "n": "The attachment's index (0, 1, ...)."})
async def attachment(request: web.Request) -> web.StreamResponse:
    n_text = request.match_info["n"]
    if not n_text.isdigit() or len(n_text) > 4:
        raise ValidationFailed(["n: must be the attachment's index (0, 1, ...)"])
    att = await mail_service.attachment(request.app[CTX], principal_of(request),
                                        request.match_info["msg_id"], int(n_text))
    return web.Response(body=att.data, content_type=att.content_type, headers={
        "Content-Disposition": f'attachment; filename="{att.filename}"',
        "X-Content-Type-Options": "nosniff"})


async def _mark(request: web.Request, read: bool) -> web.StreamResponse:
    return json_response(await mail_service.mark(
        request.app[CTX], principal_of(request), request.match_info["msg_id"], read))


@operation(routes, "POST", "/v1/inbox/{msg_id}/read", id="markRead", tag="mail",
           summary="Mark a message read", description="Sets the \\Seen flag.",
           permission="write", answers={200: Marked}, errors=(409,), path_params=MESSAGE)
async def mark_read(request: web.Request) -> web.StreamResponse:
    return await _mark(request, True)


@operation(routes, "POST", "/v1/inbox/{msg_id}/unread", id="markUnread", tag="mail",
           summary="Mark a message unread", description="Clears the \\Seen flag.",
           permission="write", answers={200: Marked}, errors=(409,), path_params=MESSAGE)
async def mark_unread(request: web.Request) -> web.StreamResponse:
    return await _mark(request, False)


@operation(routes, "GET", "/v1/domains/{id}/reputation", id="getDomainReputation",
           tag="domains", summary="A domain's sending reputation",
           description="Messages sent, bounces and complaints over the window and the "
                       "status they give (healthy, watch, blocked). A blocked domain refuses "
                       "API sends and new mailboxes.",
           permission="read", answers={200: DomainReputation},
           path_params={"id": "The domain's id (dom_...)."})
async def domain_reputation(request: web.Request) -> web.StreamResponse:
    return json_response(await mail_service.domain_reputation(
        request.app[CTX], principal_of(request), request.match_info["id"]))


# ------------------------------------------------------------------ webhooks

_ACCOUNT_WIDE = (" Webhooks are account-wide: a token restricted to some domains gets "
                 "403.")


@operation(routes, "POST", "/v1/webhooks", id="createWebhook", tag="mail",
           summary="Register a webhook (its signing secret is shown once)",
           description="Events of every domain of the account are POSTed to the URL, "
                       "signed with X-Mailforge-Signature: sha256=<hex HMAC-SHA256 of the "
                       "body>, and retried with backoff. A URL to a loopback, private or "
                       "otherwise non-public address is a 400 naming url." + _ACCOUNT_WIDE,
           permission="write", body=NewWebhook, answers={201: NewWebhookSecret},
           idempotent=True)
async def create_webhook(request: web.Request) -> web.StreamResponse:
    new = body_of(request, NewWebhook)
    return render(await webhook_service.create(request.app[CTX], principal_of(request),
                                               new.url, new.events, *key_of(request)))


@operation(routes, "GET", "/v1/webhooks", id="listWebhooks", tag="mail",
           summary="List the account's webhooks",
           description="Oldest first, paged." + _ACCOUNT_WIDE,
           permission="read", query=Page, answers={200: Webhooks})
async def list_webhooks(request: web.Request) -> web.StreamResponse:
    page = query_of(request, Page)
    return json_response(await webhook_service.list_webhooks(
        request.app[CTX], principal_of(request), page.limit, page.offset, page.cursor))


@operation(routes, "DELETE", "/v1/webhooks/{id}", id="deleteWebhook", tag="mail",
           summary="Delete a webhook",
           description="Its pending deliveries are dropped." + _ACCOUNT_WIDE,
           permission="write", answers={204: Raw("Deleted.", "")},
           path_params={"id": "The webhook's id (whk_...)."})
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    await webhook_service.delete(request.app[CTX], principal_of(request),
                                 request.match_info["id"])
    return web.Response(status=204)


@operation(routes, "GET", "/v1/webhooks/{id}/deliveries", id="listWebhookDeliveries",
           tag="mail", summary="A webhook's recent deliveries",
           description="Newest first, paged: each event's state, attempts and the "
                       "receiver's last answer." + _ACCOUNT_WIDE,
           permission="read", query=Page, answers={200: Deliveries},
           path_params={"id": "The webhook's id (whk_...)."})
async def webhook_deliveries(request: web.Request) -> web.StreamResponse:
    page = query_of(request, Page)
    return json_response(await webhook_service.deliveries(
        request.app[CTX], principal_of(request), request.match_info["id"], page.limit,
        page.offset, page.cursor))

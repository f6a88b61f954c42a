"""Mail through the API: send, list, read bodies and attachments, mark read/unread,
sending quota and warm-up, domain reputation, and webhooks."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from aiohttp import web

from .. import ids, netguard, reputation, webhooks
from ..errors import NotFound, ValidationFailed
from ..mail import compose
from ..mail.imap import check_folder
from ..mail.service import MailService
from ..store.queries import Q
from .context import CTX
from .errors import ApiError
from .http import (
    authenticate,
    check_fields,
    json_body,
    paging,
    require_unrestricted,
    rfc3339,
)
from .idempotency import idempotent

routes = web.RouteTableDef()
MAIL = web.AppKey("mailforge_mail", MailService)


def _svc(request: web.Request) -> MailService:
    svc = request.app.get(MAIL)
    if svc is None:
        raise ApiError("mail_unavailable", "Mail through the API is not running.", status=503)
    return svc


@routes.post("/v1/email-users/{id}/inbox/send")
async def send(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    svc = _svc(request)
    sender = await svc.sender(principal.account_id, request.match_info["id"])
    body = await json_body(request)
    req, errs = compose.parse_send(body)
    if errs or req is None:
        raise ValidationFailed(errs)

    async def produce() -> tuple[int, dict[str, Any]]:
        return 200, await svc.send(sender, req)

    resp = await idempotent(request, principal, body, produce)
    with_remaining = json.loads(resp.body) if isinstance(resp.body, bytes) else {}
    if "remaining" in with_remaining:
        resp.headers["X-Send-Limit-Remaining"] = str(with_remaining["remaining"])
    return resp


@routes.get("/v1/email-users/{id}/inbox")
async def list_inbox(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    svc = _svc(request)
    limit, offset = paging(request)
    q = request.query
    folder = q.get("folder", "INBOX")
    errs = []
    if not check_folder(folder):
        errs.append("folder: must be a folder name (no quotes, backslashes or wildcards)")
    unread = q.get("unread", "false").lower()
    if unread not in ("true", "false", "1", "0"):
        errs.append("unread: must be true or false")
    if errs:
        raise ValidationFailed(errs)
    sender = await svc.sender(principal.account_id, request.match_info["id"])
    out = await svc.list(sender, folder, unread in ("true", "1"), limit, offset)
    return web.json_response(out)


@routes.get("/v1/email-users/{id}/sending")
async def get_sending(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    svc = _svc(request)
    sender = await svc.sender(principal.account_id, request.match_info["id"])
    return web.json_response(await svc.quota(sender))


@routes.put("/v1/email-users/{id}/sending")
async def put_sending(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    svc = _svc(request)
    sender = await svc.sender(principal.account_id, request.match_info["id"])
    body = await json_body(request)
    errs = check_fields(body, {"daily_send_limit", "warmup"}, set())
    limit = body.get("daily_send_limit")
    if "daily_send_limit" in body and limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1_000_000):
        errs.append("daily_send_limit: must be null or an integer from 0 to 1000000")
    warm = body.get("warmup")
    warmup: tuple[int, int, date] | None = None
    if warm is not None:
        if not isinstance(warm, dict):
            errs.append("warmup: must be an object or null")
        else:
            errs += check_fields(warm, {"start_limit", "days", "started_on"}, set(), "warmup.")
            start = warm.get("start_limit", svc.cfg.mail.warmup_start)
            days = warm.get("days", svc.cfg.mail.warmup_days)
            if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= 10000:
                errs.append("warmup.start_limit: must be an integer from 1 to 10000")
            if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
                errs.append("warmup.days: must be an integer from 1 to 365")
            started = date.today()
            if warm.get("started_on") is not None:
                try:
                    started = date.fromisoformat(str(warm["started_on"]))
                except ValueError:
                    errs.append("warmup.started_on: must be a date YYYY-MM-DD")
            warmup = (start, days, started)
    if errs:
        raise ValidationFailed(errs)
    async with svc.pool.acquire() as conn, conn.transaction():
        if "daily_send_limit" in body:
            await conn.execute(Q.mail_set_daily_limit, principal.account_id, sender.id, limit)
        if "warmup" in body:
            if warmup is None:
                await conn.execute(Q.mail_clear_warmup, sender.id)
            else:
                await conn.execute(Q.mail_set_warmup, sender.id, *warmup)
    sender = await svc.sender(principal.account_id, sender.id)
    return web.json_response(await svc.quota(sender))


@routes.get("/v1/inbox/{msg_id}/body")
async def body(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    raw = await _svc(request).raw(principal.account_id, request.match_info["msg_id"])
    msg = compose.parse(raw)
    text, html = compose.bodies(msg)
    return web.json_response({"id": request.match_info["msg_id"],
                              "body": text if text is not None else (html or ""),
                              "text": text, "html": html,
                              "subject": compose.header_text(msg.get("Subject")),
                              "message_id": compose.header_text(msg.get("Message-ID"))})


@routes.get("/v1/inbox/{msg_id}/attachments")
async def attachments(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    msg_id = request.match_info["msg_id"]
    raw = await _svc(request).raw(principal.account_id, msg_id)
    items = [{"index": n, "filename": name, "content_type": ctype, "size": len(data),
              "url": f"/v1/inbox/{msg_id}/attachments/{n}"}
             for n, (name, ctype, data) in enumerate(compose.attachments(compose.parse(raw)))]
    return web.json_response({"attachments": items})


@routes.get("/v1/inbox/{msg_id}/attachments/{n}")
async def attachment(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    n_text = request.match_info["n"]
    if not n_text.isdigit() or len(n_text) > 4:
        raise ValidationFailed(["n: must be the attachment's index (0, 1, ...)"])
    raw = await _svc(request).raw(principal.account_id, request.match_info["msg_id"])
    items = compose.attachments(compose.parse(raw))
    n = int(n_text)
    if n >= len(items):
        raise NotFound("attachment")
    name, ctype, data = items[n]
    safe = re.sub(r'[^A-Za-z0-9._ -]', "_", name)[:200] or "attachment"
    return web.Response(body=data, content_type=ctype, headers={
        "Content-Disposition": f'attachment; filename="{safe}"',
        "X-Content-Type-Options": "nosniff"})


async def _mark(request: web.Request, read: bool) -> web.Response:
    principal = await authenticate(request, "write")
    msg_id = request.match_info["msg_id"]
    await _svc(request).set_read(principal.account_id, msg_id, read)
    return web.json_response({"id": msg_id, "is_read": read})


@routes.post("/v1/inbox/{msg_id}/read")
async def mark_read(request: web.Request) -> web.Response:
    return await _mark(request, True)


@routes.post("/v1/inbox/{msg_id}/unread")
async def mark_unread(request: web.Request) -> web.Response:
    return await _mark(request, False)


@routes.get("/v1/domains/{id}/reputation")
async def domain_reputation(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    d = await ctx.store.domains.get(principal.account_id, request.match_info["id"])
    rep = await reputation.domain_json(ctx.store.pool, d.id, ctx.cfg.reputation)
    return web.json_response({"domain_id": d.id, "domain": d.name, **rep})


# ------------------------------------------------------------------ webhooks


def _webhook_json(r: Any) -> dict[str, Any]:
    return {"id": r["id"], "url": r["url"], "events": list(r["events"]),
            "created_at": rfc3339(r["created_at"])}


@routes.post("/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    # Webhooks carry events of every domain of the account: not for a token restricted
    # to some of its domains (it would read the others' mail through them).
    require_unrestricted(principal)
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, {"url", "events"}, {"url"})
    url = body.get("url")
    if "url" in body:
        # The receiver is tenant-given: the outbound guard refuses an address mailforge
        # may not connect to for a tenant (it checks every delivery again).
        errs += netguard.validate_url(
            url, netguard.Guard.from_config(ctx.cfg.outbound.allow_networks))
    events = body.get("events", list(webhooks.EVENTS))
    if not isinstance(events, list) or not events or \
            any(e not in webhooks.EVENTS for e in events):
        errs.append(f"events: must be a non-empty list of: {', '.join(webhooks.EVENTS)}")
    if errs:
        raise ValidationFailed(errs)

    async def produce() -> tuple[int, dict[str, Any]]:
        wid = ids.new_id("evt").replace("evt_", "whk_", 1)
        secret = webhooks.new_secret()
        sealed = ctx.box.seal(secret.encode(), webhooks.secret_context(wid))
        async with ctx.store.pool.acquire() as conn:
            row = await conn.fetchrow(Q.webhook_insert, wid, principal.account_id, url,
                                      sorted(set(events)), sealed)
        return 201, {**_webhook_json(row), "secret": secret}

    return await idempotent(request, principal, body, produce)


@routes.get("/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    require_unrestricted(principal)
    async with request.app[CTX].store.pool.acquire() as conn:
        rows = await conn.fetch(Q.webhook_list, principal.account_id)
    return web.json_response({"webhooks": [_webhook_json(r) for r in rows]})


@routes.delete("/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    require_unrestricted(principal)
    async with request.app[CTX].store.pool.acquire() as conn:
        gone = await conn.fetchval(Q.webhook_delete, principal.account_id,
                                   request.match_info["id"])
    if gone is None:
        raise NotFound("webhook")
    return web.Response(status=204)


@routes.get("/v1/webhooks/{id}/deliveries")
async def webhook_deliveries(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    require_unrestricted(principal)
    limit, _offset = paging(request)
    async with request.app[CTX].store.pool.acquire() as conn:
        row = await conn.fetchrow(Q.webhook_get, principal.account_id,
                                  request.match_info["id"])
        if row is None:
            raise NotFound("webhook")
        rows = await conn.fetch(Q.webhook_deliveries_of, row["id"], limit)
    return web.json_response({"deliveries": [
        {"id": r["id"], "event_id": r["event_id"], "event": r["event"], "state": r["state"],
         "attempts": r["attempts"], "last_status": r["last_status"],
         "last_error": r["last_error"], "created_at": rfc3339(r["created_at"]),
         "delivered_at": rfc3339(r["delivered_at"]),
         "next_attempt_at": rfc3339(r["next_attempt_at"])} for r in rows]})


# ------------------------------------------------------------------ OpenAPI

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "details": {"type": "array", "items": {"type": "string"}}}}}}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ERROR}}}


def _ok(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_COMMON = {"401": _err("Missing or invalid token."), "403": _err("Permission missing."),
           "404": _err("No such resource (or another tenant's).")}
_ADDRS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_MSGIDS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_NULLSTR = {"type": ["string", "null"]}
_PATH_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_PATH_MSG = [{"name": "msg_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_QUOTA = {"type": "object", "properties": {
    "daily_send_limit": {"type": ["integer", "null"]}, "default_daily_limit": {"type": "integer"},
    "effective_limit": {"type": "integer"}, "sent_today": {"type": "integer"},
    "remaining": {"type": "integer"}, "resets_at": {"type": "string"},
    "warmup": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
        "start_limit": {"type": "integer"}, "days": {"type": "integer"},
        "started_on": {"type": "string"}}}]}}}
_MESSAGE = {"type": "object", "properties": {
    "uid": {"type": "integer"}, "id": {"type": "string"}, "message_id": _NULLSTR,
    "from": _NULLSTR, "to": {"type": "array", "items": {"type": "string"}},
    "cc": {"type": "array", "items": {"type": "string"}}, "subject": {"type": "string"},
    "date": _NULLSTR, "is_read": {"type": "boolean"}, "in_reply_to": _NULLSTR,
    "references": {"type": "array", "items": {"type": "string"}},
    "has_attachments": {"type": "boolean"}}}
_WEBHOOK = {"type": "object", "properties": {
    "id": {"type": "string"}, "url": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string", "enum": list(webhooks.EVENTS)}},
    "created_at": {"type": "string"}, "secret": {"type": "string"}}}

openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/email-users/{id}/inbox/send": {"post": {
        "summary": "Send a message as the mailbox (through Postfix, DKIM-signed; copy in Sent)",
        "operationId": "sendMail", "parameters": _PATH_ID,
        "requestBody": _body({"type": "object", "additionalProperties": False,
                              "required": ["to"], "properties": {
            "to": _ADDRS, "cc": _ADDRS, "bcc": _ADDRS, "subject": {"type": "string"},
            "body": {"type": "string"}, "html": {"type": "boolean"},
            "text": {"type": "string"}, "in_reply_to": {"type": "string"},
            "references": _MSGIDS,
            "attachments": {"type": "array", "maxItems": 20, "items": {
                "type": "object", "additionalProperties": False,
                "required": ["filename", "content_base64"], "properties": {
                    "filename": {"type": "string"}, "content_type": {"type": "string"},
                    "content_base64": {"type": "string"}}}}}}),
        "responses": {"200": _ok("Accepted by the mail server.", {"type": "object", "properties": {
            "message_id": {"type": "string"}, "status": {"type": "string", "enum": ["sent"]},
            "remaining": {"type": "integer"}}}),
            "400": _err("Invalid request."), **_COMMON,
            "409": _err("Mailbox not active, or domain_reputation_blocked."),
            "429": _err("Daily send limit reached (Retry-After header)."),
            "502": _err("The mail server refused the message."),
            "503": _err("Mail through the API is not configured.")}}},
    "/v1/email-users/{id}/inbox": {"get": {
        "summary": "List messages of a folder, newest first", "operationId": "listInbox",
        "parameters": [*_PATH_ID,
                       {"name": "folder", "in": "query", "schema": {"type": "string"}},
                       {"name": "unread", "in": "query", "schema": {"type": "boolean"}},
                       {"name": "limit", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                       {"name": "offset", "in": "query",
                        "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": _ok("A page of messages.", {"type": "object", "properties": {
            "messages": {"type": "array", "items": _MESSAGE}, "total": {"type": "integer"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "folder": {"type": "string"}}}), "400": _err("Invalid query."), **_COMMON,
            "409": _err("Mailbox not active.")}}},
    "/v1/email-users/{id}/sending": {
        "get": {"summary": "Daily send limit, warm-up and today's count",
                "operationId": "getSending", "parameters": _PATH_ID,
                "responses": {"200": _ok("Sending quota.", _QUOTA), **_COMMON}},
        "put": {"summary": "Set the daily send limit and the warm-up schedule",
                "operationId": "putSending", "parameters": _PATH_ID,
                "requestBody": _body({"type": "object", "additionalProperties": False,
                                      "properties": {
                    "daily_send_limit": {"type": ["integer", "null"], "minimum": 0},
                    "warmup": {"oneOf": [{"type": "null"}, {
                        "type": "object", "additionalProperties": False, "properties": {
                            "start_limit": {"type": "integer", "minimum": 1},
                            "days": {"type": "integer", "minimum": 1},
                            "started_on": {"type": "string", "format": "date"}}}]}}}),
                "responses": {"200": _ok("Sending quota.", _QUOTA),
                              "400": _err("Invalid request."), **_COMMON}}},
    "/v1/inbox/{msg_id}/body": {"get": {
        "summary": "Text and HTML body, decoded", "operationId": "getMessageBody",
        "parameters": _PATH_MSG,
        "responses": {"200": _ok("The body.", {"type": "object", "properties": {
            "id": {"type": "string"}, "body": {"type": "string"}, "text": _NULLSTR,
            "html": _NULLSTR, "subject": _NULLSTR, "message_id": _NULLSTR}}), **_COMMON}}},
    "/v1/inbox/{msg_id}/attachments": {"get": {
        "summary": "Attachments of a message", "operationId": "listAttachments",
        "parameters": _PATH_MSG,
        "responses": {"200": _ok("Attachments.", {"type": "object", "properties": {
            "attachments": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "filename": {"type": "string"},
                "content_type": {"type": "string"}, "size": {"type": "integer"},
                "url": {"type": "string"}}}}}}), **_COMMON}}},
    "/v1/inbox/{msg_id}/attachments/{n}": {"get": {
        "summary": "Download one attachment (its bytes)", "operationId": "getAttachment",
        "parameters": [*_PATH_MSG, {"name": "n", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": {"description": "The attachment's bytes.",
                              "content": {"application/octet-stream": {
                                  "schema": {"type": "string", "format": "binary"}}}},
                      "400": _err("Invalid index."), **_COMMON}}},
    "/v1/inbox/{msg_id}/read": {"post": {
        "summary": "Mark read", "operationId": "markRead", "parameters": _PATH_MSG,
        "responses": {"200": _ok("Marked.", {"type": "object", "properties": {
            "id": {"type": "string"}, "is_read": {"type": "boolean"}}}), **_COMMON}}},
    "/v1/inbox/{msg_id}/unread": {"post": {
        "summary": "Mark unread", "operationId": "markUnread", "parameters": _PATH_MSG,
        "responses": {"200": _ok("Marked.", {"type": "object", "properties": {
            "id": {"type": "string"}, "is_read": {"type": "boolean"}}}), **_COMMON}}},
    "/v1/domains/{id}/reputation": {"get": {
        "summary": "Sending reputation of a domain over the window",
        "operationId": "getDomainReputation", "parameters": _PATH_ID,
        "responses": {"200": _ok("Reputation.", {"type": "object", "properties": {
            "domain_id": {"type": "string"}, "domain": {"type": "string"},
            "status": {"type": "string", "enum": ["healthy", "watch", "blocked"]},
            "window_days": {"type": "integer"}, "sent": {"type": "integer"},
            "bounces": {"type": "integer"}, "complaints": {"type": "integer"},
            "bounce_rate": {"type": "number"}, "complaint_rate": {"type": "number"}}}),
            **_COMMON}}},
    "/v1/webhooks": {
        "post": {"summary": "Register a webhook (the signing secret is shown once)",
                 "operationId": "createWebhook",
                 "requestBody": _body({"type": "object", "additionalProperties": False,
                                       "required": ["url"], "properties": {
                     "url": {"type": "string"},
                     "events": {"type": "array", "minItems": 1, "items": {
                         "type": "string", "enum": list(webhooks.EVENTS)}}}}),
                 "responses": {"201": _ok("Created.", _WEBHOOK),
                               "400": _err("Invalid request."), **_COMMON}},
        "get": {"summary": "List webhooks", "operationId": "listWebhooks",
                "responses": {"200": _ok("Webhooks.", {"type": "object", "properties": {
                    "webhooks": {"type": "array", "items": _WEBHOOK}}}), **_COMMON}}},
    "/v1/webhooks/{id}": {"delete": {
        "summary": "Delete a webhook", "operationId": "deleteWebhook", "parameters": _PATH_ID,
        "responses": {"204": {"description": "Deleted."}, **_COMMON}}},
    "/v1/webhooks/{id}/deliveries": {"get": {
        "summary": "Recent deliveries of a webhook", "operationId": "listWebhookDeliveries",
        "parameters": _PATH_ID,
        "responses": {"200": _ok("Deliveries.", {"type": "object", "properties": {
            "deliveries": {"type": "array", "items": {"type": "object"}}}}), **_COMMON}}},
}

"""Mail through the API: send, list, read bodies and attachments, mark read/unread,
sending quota and warm-up, domain reputation, and webhooks. Each handler parses,
calls one service function (``service/mail.py``, ``service/webhooks.py``) and renders."""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web

from .. import webhooks
from ..errors import ValidationFailed
from ..mail import compose
from ..mail.imap import check_folder
from ..service import idempotency as idem
from ..service import mail as mail_service
from ..service import webhooks as webhook_service
from .context import CTX
from .http import authenticate, check_fields, json_body, paging
from .idempotency import render
from .render import json_response

routes = web.RouteTableDef()


def _idempotency(request: web.Request, body: dict[str, Any]) -> tuple[str | None, bytes]:
    """The request's Idempotency-Key and what it is bound to (method, path, body)."""
    return (request.headers.get("Idempotency-Key"),
            idem.fingerprint(f"{request.method} {request.path}", body))


@routes.post("/v1/email-users/{id}/inbox/send")
async def send(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    req, errs = compose.parse_send(body)
    if errs or req is None:
        raise ValidationFailed(errs)
    answer = await mail_service.send(request.app[CTX], principal, request.match_info["id"],
                                     req, *_idempotency(request, body))
    resp = render(answer)
    if "remaining" in answer.body:
        resp.headers["X-Send-Limit-Remaining"] = str(answer.body["remaining"])
    return resp


@routes.get("/v1/email-users/{id}/inbox")
async def list_inbox(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
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
    return json_response(await mail_service.list_messages(
        request.app[CTX], principal, request.match_info["id"], folder,
        unread in ("true", "1"), limit, offset))


@routes.get("/v1/email-users/{id}/sending")
async def get_sending(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    return json_response(await mail_service.get_sending(request.app[CTX], principal,
                                                        request.match_info["id"]))


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _sending_update(body: dict[str, Any]) -> mail_service.SendingUpdate:
    errs = check_fields(body, {"daily_send_limit", "warmup"}, set())
    limit = body.get("daily_send_limit")
    if limit is not None and not _int_in(limit, 0, 1_000_000):
        errs.append("daily_send_limit: must be null or an integer from 0 to 1000000")
    warm = body.get("warmup")
    warmup = None
    if warm is not None:
        if not isinstance(warm, dict):
            errs.append("warmup: must be an object or null")
        else:
            errs += check_fields(warm, {"start_limit", "days", "started_on"}, set(), "warmup.")
            start, days = warm.get("start_limit"), warm.get("days")
            if start is not None and not _int_in(start, 1, 10000):
                errs.append("warmup.start_limit: must be an integer from 1 to 10000")
            if days is not None and not _int_in(days, 1, 365):
                errs.append("warmup.days: must be an integer from 1 to 365")
            started = None
            if warm.get("started_on") is not None:
                try:
                    started = date.fromisoformat(str(warm["started_on"]))
                except ValueError:
                    errs.append("warmup.started_on: must be a date YYYY-MM-DD")
            warmup = mail_service.WarmupInput(start, days, started)
    if errs:
        raise ValidationFailed(errs)
    return mail_service.SendingUpdate("daily_send_limit" in body, limit, "warmup" in body,
                                      warmup)


@routes.put("/v1/email-users/{id}/sending")
async def put_sending(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    update = _sending_update(await json_body(request))
    return json_response(await mail_service.set_sending(request.app[CTX], principal,
                                                        request.match_info["id"], update))


@routes.get("/v1/inbox/{msg_id}/body")
async def body(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    return json_response(await mail_service.message_body(request.app[CTX], principal,
                                                         request.match_info["msg_id"]))


@routes.get("/v1/inbox/{msg_id}/attachments")
async def attachments(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    items = await mail_service.list_attachments(request.app[CTX], principal,
                                                request.match_info["msg_id"])
    return json_response({"attachments": items})


@routes.get("/v1/inbox/{msg_id}/attachments/{n}")
async def attachment(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    n_text = request.match_info["n"]
    if not n_text.isdigit() or len(n_text) > 4:
        raise ValidationFailed(["n: must be the attachment's index (0, 1, ...)"])
    att = await mail_service.attachment(request.app[CTX], principal,
                                        request.match_info["msg_id"], int(n_text))
    return web.Response(body=att.data, content_type=att.content_type, headers={
        "Content-Disposition": f'attachment; filename="{att.filename}"',
        "X-Content-Type-Options": "nosniff"})


async def _mark(request: web.Request, read: bool) -> web.Response:
    principal = await authenticate(request, "write")
    return json_response(await mail_service.mark(request.app[CTX], principal,
                                                 request.match_info["msg_id"], read))


@routes.post("/v1/inbox/{msg_id}/read")
async def mark_read(request: web.Request) -> web.Response:
    return await _mark(request, True)


@routes.post("/v1/inbox/{msg_id}/unread")
async def mark_unread(request: web.Request) -> web.Response:
    return await _mark(request, False)


@routes.get("/v1/domains/{id}/reputation")
async def domain_reputation(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    return json_response(await mail_service.domain_reputation(
        request.app[CTX], principal, request.match_info["id"]))


# ------------------------------------------------------------------ webhooks


@routes.post("/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    body = await json_body(request)
    errs = check_fields(body, {"url", "events"}, {"url"})
    url = body.get("url")
    if "url" in body and not isinstance(url, str):
        errs.append("url: must be a string")
    events = body.get("events", list(webhooks.EVENTS))
    if not isinstance(events, list) or not events or \
            any(e not in webhooks.EVENTS for e in events):
        errs.append(f"events: must be a non-empty list of: {', '.join(webhooks.EVENTS)}")
    if errs:
        raise ValidationFailed(errs)
    assert isinstance(url, str)
    return render(await webhook_service.create(request.app[CTX], principal, url, events,
                                               *_idempotency(request, body)))


@routes.get("/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    hooks = await webhook_service.list_webhooks(request.app[CTX], principal)
    return json_response({"webhooks": [webhook_service.webhook_json(w) for w in hooks]})


@routes.delete("/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    await webhook_service.delete(request.app[CTX], principal, request.match_info["id"])
    return web.Response(status=204)


@routes.get("/v1/webhooks/{id}/deliveries")
async def webhook_deliveries(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    limit, _offset = paging(request)
    found = await webhook_service.deliveries(request.app[CTX], principal,
                                             request.match_info["id"], limit)
    return json_response({"deliveries": [webhook_service.delivery_json(d) for d in found]})


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

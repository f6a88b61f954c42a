"""The audit log: every successful write through the API is recorded centrally by a
middleware (who: account and token; what: action and resource; when; from where; a
summary of the request with secrets redacted), and read back with ``GET /v1/audit``.

Recording is keyed on the matched route, so endpoints added by any module are audited
without doing anything. The record is written after the handler's own transaction
has committed: a failure to record is logged loudly but does not turn a completed
write into an error the client would retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from ..errors import ValidationFailed
from ..log import get
from ..models import Principal
from ..service import audit as service
from . import oas
from .context import CTX
from .http import BODY_KEY, PRINCIPAL_KEY, authenticate, client_addr
from .render import json_response, rfc3339

log = get("mailforge.audit")
routes = web.RouteTableDef()

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Field names whose values never reach the audit log (or any log).
# Message contents (subject, body, attachments) are not the audit log's business either.
SECRET_FIELD = re.compile(r"pass|secret|token|private|credential|authorization|"
                          r"api_?key|dkim_?key|attachment|body|content|subject|html|text|"
                          r"signature", re.IGNORECASE)
REDACTED = "[redacted]"
MAX_ITEMS = 20
MAX_TEXT = 200


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of a request body fit for the audit log: secret fields replaced, long
    lists and strings shortened, deep nesting cut."""
    if depth > 4:
        return "[…]"
    if isinstance(value, dict):
        return {str(k)[:64]: (REDACTED if SECRET_FIELD.search(str(k)) else
                              redact(v, depth + 1))
                for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        items = [redact(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"[… {len(value) - MAX_ITEMS} more]")
        return items
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def _resource_id(request: web.Request, response: web.StreamResponse) -> str | None:
    for key in ("id", "msg_id"):
        if key in request.match_info:
            return request.match_info[key][:128]
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray) and body[:1] == b"{":
        try:
            data = json.loads(body)
        except ValueError:
            return None
        for key in ("id", "account_id", "domain_id"):
            if isinstance(data.get(key), str):
                return str(data[key])[:128]
        items = data.get("domains")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            return str(items[0].get("id"))[:128]
    return None


def _action(request: web.Request) -> tuple[str, str]:
    route = request.match_info.route
    handler = route.handler
    module = getattr(handler, "__module__", "").rsplit(".", 1)[-1]
    name = getattr(handler, "__name__", "handler")
    canonical = route.resource.canonical if route.resource is not None else request.path
    return f"{module}.{name}", canonical


@web.middleware
async def audit_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    response = await handler(request)
    if request.method not in WRITE_METHODS or response.status >= 400:
        return response
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        return response  # not an authenticated write (e.g. none exists yet)
    action, route = _action(request)
    summary: dict[str, Any] = {}
    if BODY_KEY in request:
        summary["request"] = redact(request[BODY_KEY])
    if request.headers.get("Idempotency-Key"):
        summary["idempotent_replay"] = response.headers.get("Idempotent-Replayed") == "true"
    event = service.AuditEvent(
        account_id=principal.account_id, actor_account_id=principal.actor_account_id,
        token_id=principal.token_id, action=action, method=request.method, route=route,
        resource_id=_resource_id(request, response), status=response.status,
        client_addr=client_addr(request) or None,
        request_id=structlog.contextvars.get_contextvars().get("request_id"),
        summary=summary)
    try:
        await service.record(request.app[CTX], event)
    except Exception:
        log.exception("audit record failed", action=action, route=route)
    return response


def _time(name: str, value: str, errs: list[str]) -> datetime | None:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if t.tzinfo is None:
            raise ValueError
        return t
    except ValueError:
        errs.append(f"{name}: must be an RFC 3339 time with a zone")
        return None


@routes.get("/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    q = request.query
    errs: list[str] = []
    limit = 50
    if "limit" in q:
        try:
            limit = int(q["limit"])
            if not 1 <= limit <= 500:
                raise ValueError
        except ValueError:
            errs.append("limit: must be an integer from 1 to 500")
    since = _time("since", q["since"], errs) if q.get("since") else None
    until = _time("until", q["until"], errs) if q.get("until") else None
    cursor = q.get("cursor")
    if cursor == "":
        errs.append("cursor: not a cursor this API returned")
    if errs:
        raise ValidationFailed(errs)
    flt = service.AuditFilter(action=q.get("action") or None,
                              token_id=q.get("token_id") or None,
                              resource_id=q.get("resource_id") or None,
                              since=since, until=until)
    page = await service.list_events(request.app[CTX], principal, flt, limit, cursor)
    events = [{
        "id": r.id, "at": rfc3339(r.at), "account_id": r.event.account_id,
        "actor_account_id": r.event.actor_account_id, "token_id": r.event.token_id,
        "action": r.event.action, "method": r.event.method, "route": r.event.route,
        "resource_id": r.event.resource_id, "status": r.event.status,
        "client_addr": r.event.client_addr, "request_id": r.event.request_id,
        "summary": r.event.summary,
    } for r in page.events]
    return json_response({"events": events, "next_cursor": page.next_cursor,
                          "limit": page.limit})


_EVENT = oas.obj({
    "id": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
    "account_id": {"type": "string"}, "actor_account_id": {"type": "string"},
    "token_id": {"type": "string"}, "action": {"type": "string"},
    "method": {"type": "string"}, "route": {"type": "string"},
    "resource_id": oas.NULLABLE_STR, "status": {"type": "integer"},
    "client_addr": oas.NULLABLE_STR, "request_id": oas.NULLABLE_STR,
    "summary": {"type": "object"},
}, ("id", "at", "account_id", "token_id", "action", "method", "route", "status"))


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/audit": {"get": {
        "summary": "Who did what, when, with which token, to which resource (newest first)",
        "operationId": "listAudit", "tags": ["audit"],
        "parameters": [
            oas.LIMIT, oas.ACTING,
            _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
            _q("action", {"type": "string", "maxLength": 128}, "e.g. email_users.create"),
            _q("token_id", {"type": "string", "maxLength": 128}, "events of one token"),
            _q("resource_id", {"type": "string", "maxLength": 128}, "events of a resource"),
            _q("since", {"type": "string", "format": "date-time"}, "at or after"),
            _q("until", {"type": "string", "format": "date-time"}, "before"),
        ],
        "responses": oas.responses({"200": oas.ok("Events.", oas.obj({
            "events": {"type": "array", "items": _EVENT},
            "next_cursor": oas.NULLABLE_STR, "limit": {"type": "integer"}},
            ("events", "next_cursor")))}),
    }},
}

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
from typing import Any

import structlog
from aiohttp import web

from ..log import get
from ..models import Principal
from ..schema.tenancy import AuditEventReply, AuditPage, AuditQuery
from ..service import audit as service
from .context import CTX
from .http import BODY_KEY, PRINCIPAL_KEY, client_addr
from .operation import operation, principal_of, query_of, reply
from .render import rfc3339

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


@operation(routes, "GET", "/v1/audit", id="listAudit", tag="audit",
           summary="Who did what, when, with which token, to which resource (newest first)",
           description="Every successful write of the account (POST, PUT, PATCH, DELETE "
                       "answered below 400), whatever route served it, with request "
                       "bodies' secrets redacted. Append-only. For unrestricted admin "
                       "tokens.",
           permission="admin", query=AuditQuery, answers={200: AuditPage})
async def list_audit(request: web.Request) -> web.StreamResponse:
    q = query_of(request, AuditQuery)
    flt = service.AuditFilter(action=q.action or None, token_id=q.token_id or None,
                              resource_id=q.resource_id or None, since=q.since,
                              until=q.until)
    page = await service.list_events(request.app[CTX], principal_of(request), flt,
                                     q.limit, q.cursor)
    return reply(AuditPage(events=[AuditEventReply(
        id=r.id, at=rfc3339(r.at) or "", account_id=r.event.account_id,
        actor_account_id=r.event.actor_account_id, token_id=r.event.token_id,
        action=r.event.action, method=r.event.method, route=r.event.route,
        resource_id=r.event.resource_id, status=r.event.status,
        client_addr=r.event.client_addr, request_id=r.event.request_id,
        summary=r.event.summary) for r in page.events],
        next_cursor=page.next_cursor, limit=page.limit))

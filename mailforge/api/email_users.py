"""Mailbox ("email user") endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import password, validation
from ..errors import Conflict, ValidationFailed
from ..models import Domain, Mailbox
from ..store.store import NewMailbox
from .context import CTX, ApiContext
from .domains import _resolve
from .http import authenticate, check_fields, idempotent, json_body, paging, rfc3339

routes = web.RouteTableDef()

USER_FIELDS = {"username", "name", "password", "quota_mb"}
STATUSES = ("pending", "active", "suspended", "deleting", "failed")


@dataclass(frozen=True)
class UserInput:
    local_part: str
    name: str
    password: str | None
    quota_mb: int | None


def parse_user(ctx: ApiContext, item: object, prefix: str, extra: frozenset[str] = frozenset()
               ) -> tuple[UserInput | None, list[str]]:
    """Validate one user item; every problem is reported with its field path."""
    if not isinstance(item, dict):
        return None, [f"{prefix.rstrip('.')}: must be an object"]
    errs = check_fields(item, USER_FIELDS | extra, {"username"}, prefix)
    local = name = pw = None
    quota = None
    if "username" in item:
        try:
            local = validation.local_part(item["username"])
        except ValueError as exc:
            errs.append(f"{prefix}username: {exc}")
    try:
        name = validation.display_name(item.get("name"))
    except ValueError as exc:
        errs.append(f"{prefix}name: {exc}")
    if item.get("password") is not None:
        try:
            pw = validation.password(item["password"], ctx.cfg.passwords.min_length)
        except ValueError as exc:
            errs.append(f"{prefix}password: {exc}")
    if item.get("quota_mb") is not None:
        q = item["quota_mb"]
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 1_048_576:
            errs.append(f"{prefix}quota_mb: must be an integer from 1 to 1048576")
        else:
            quota = q
    if errs or local is None:
        return None, errs
    return UserInput(local, name or "", pw, quota), []


def mailbox_json(ctx: ApiContext, m: Mailbox, domain: str) -> dict[str, Any]:
    host = ctx.cfg.host
    return {
        "id": m.id,
        "email": m.address,
        "username": m.local_part,
        "name": m.name,
        "domain": domain,
        "domain_id": m.domain_id,
        "status": m.status,
        "quota_mb": m.quota_mb,
        "daily_send_limit": m.daily_send_limit,
        "last_error": m.last_error,
        "imap": {"host": host.imap.host, "port": host.imap.port},
        "smtp": {"host": host.submission.host, "port": host.submission.port},
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
    }


def require_ready(domain: Domain) -> None:
    if domain.deleted or not domain.backend_enabled:
        raise Conflict("domain_not_ready",
                       f"Domain {domain.name} is not set up; call /v1/domains/setup first.")


@routes.post("/v1/email-users")
async def create(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    user, errs = parse_user(ctx, body, "", extra=frozenset({"domain"}))
    if "domain" not in body:
        errs.append("domain: is required")
    if errs or user is None:
        raise ValidationFailed(errs)
    domain = await _resolve(request, principal.account_id, body["domain"])
    require_ready(domain)

    async def produce() -> tuple[int, dict[str, Any]]:
        generated = user.password is None
        pw = password.generate(ctx.cfg.passwords.generated_length) if generated \
            else user.password
        assert pw is not None
        (hashed,) = await ctx.hash_passwords([pw])
        item = NewMailbox(user.local_part, user.name, hashed,
                          user.quota_mb or ctx.cfg.backend.postfix_dovecot.default_quota_mb)
        job, created = await ctx.store.create_mailboxes(principal.account_id, domain, [item],
                                                        "email_user_create")
        c = created[0]
        out: dict[str, Any] = {"job_id": job.id, "status": "pending", "id": c.id,
                               "email": c.address, "username": c.local_part}
        if generated:
            out["password"] = pw  # shown once, here
        return 202, out

    return await idempotent(request, principal, body, produce)


@routes.get("/v1/email-users")
async def list_users(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    limit, offset = paging(request)
    q = request.query
    errs = []
    domain = None
    if q.get("domain"):
        try:
            domain = validation.domain_name(q["domain"])
        except ValueError as exc:
            errs.append(f"domain: {exc}")
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        errs.append(f"status: must be one of {', '.join(STATUSES)}")
    search = q.get("search") or None
    if search is not None and len(search) > 200:
        errs.append("search: must be at most 200 characters")
    if errs:
        raise ValidationFailed(errs)
    items, total = await ctx.store.list_mailboxes(principal.account_id, domain, status,
                                                  search, limit, offset)
    return web.json_response({"users": [mailbox_json(ctx, m, d) for m, d in items],
                              "total": total, "limit": limit, "offset": offset})


@routes.get("/v1/email-users/{id}")
async def get_user(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    m, d = await ctx.store.get_mailbox(principal.account_id, request.match_info["id"])
    return web.json_response(mailbox_json(ctx, m, d))

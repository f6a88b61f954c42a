"""Mailbox ("email user") endpoints: create (single and bulk), list, get, update,
suspend/resume, delete (single and bulk, into a restorable tombstone), restore, and
username generation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import ids, names, password, reputation, validation
from ..errors import Conflict, NotFound, ValidationFailed
from ..models import Domain, Job, Mailbox, Principal
from ..store import mailboxes as mbstore
from ..store.store import NewMailbox
from . import oas
from .context import CTX, ApiContext
from .domains import _resolve
from .http import (
    authenticate,
    check_fields,
    json_body,
    list_filters,
    paging,
    rfc3339,
)
from .idempotency import idempotent, recover_job

routes = web.RouteTableDef()

USER_FIELDS = {"username", "name", "password", "quota_mb"}
STATUSES = ("pending", "active", "suspended", "deleting", "deleted", "failed")
PATCH_FIELDS = {"name", "password", "reset_password", "quota_mb", "daily_send_limit",
                "signature", "status"}


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
        "signature": m.signature,
        "last_error": m.last_error,
        "deleted_at": rfc3339(m.deleted_at),
        "restorable_until": rfc3339(m.purge_after),
        "imap": {"host": host.imap.host, "port": host.imap.port},
        "smtp": {"host": host.submission.host, "port": host.submission.port},
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
    }


def require_ready(domain: Domain) -> None:
    if domain.deleted or not domain.backend_enabled:
        raise Conflict("domain_not_ready",
                       f"Domain {domain.name} is not set up; call /v1/domains/setup first.")


async def require_not_blocked(ctx: ApiContext, domain: Domain) -> None:
    """No new sending identity on a domain its sending reputation blocked: no new or
    restored mailbox, no alias, no alias domain either way. Checked on the domain the
    validated request resolved to (its canonical name and id), so no other spelling of
    the name gets past it."""
    async with ctx.store.pool.acquire() as conn:
        await reputation.require_not_blocked(conn, domain.id, domain.name, ctx.cfg.reputation)


async def _recover_create(request: web.Request, principal: Principal,
                          job: Job) -> tuple[int, dict[str, Any]]:
    """The answer of a create whose first attempt died after committing: the mailbox
    and its job. A generated password was never shown and cannot be: reset it."""
    if job.resource_id is None:
        return await recover_job(request, principal, job)
    try:
        m, _ = await request.app[CTX].store.get_mailbox(principal.account_id, job.resource_id)
    except NotFound:
        return await recover_job(request, principal, job)
    return 202, {"job_id": job.id, "status": "pending", "id": m.id, "email": m.address,
                 "username": m.local_part, "recovered": True}


async def _recover_bulk(request: web.Request, principal: Principal,
                        job: Job) -> tuple[int, dict[str, Any]]:
    """The answer of a bulk create whose first attempt died after committing: rebuilt
    from the users sealed on the job (without their passwords, as the first answer)."""
    ctx = request.app[CTX]
    sealed = (await ctx.store.jobs.get(principal.account_id, job.id)).sealed_secrets
    if sealed is None:  # died before the listing was attached, or it expired
        out = {**(await recover_job(request, principal, job))[1], "users_count": job.total}
        return 202, out
    listing = json.loads(ctx.box.open(sealed, f"job-secrets:{job.id}"))
    return 202, {"job_id": job.id, "users_count": len(listing), "status": "pending",
                 "users": [{"id": u["id"], "email": u["email"], "username": u["username"]}
                           for u in listing], "recovered": True}


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
        await require_not_blocked(ctx, domain)
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

    return await idempotent(request, principal, body, produce, _recover_create)


@routes.get("/v1/email-users")
async def list_users(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    limit, offset = paging(request)
    q = request.query
    domain, search, errs = list_filters(request)
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        errs.append(f"status: must be one of {', '.join(STATUSES)}")
    sort = q.get("sort") or "created_at"
    if sort not in mbstore.SORTS:
        errs.append(f"sort: must be one of {', '.join(mbstore.SORTS)}")
    if errs:
        raise ValidationFailed(errs)
    items, total = await mbstore.list_page(ctx.store, principal.account_id, domain, status,
                                           search, sort, limit, offset)
    return web.json_response({"users": [mailbox_json(ctx, m, d) for m, d in items],
                              "total": total, "limit": limit, "offset": offset})


@routes.get("/v1/email-users/{id}")
async def get_user(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    ctx = request.app[CTX]
    m, d = await ctx.store.get_mailbox(principal.account_id, request.match_info["id"])
    return web.json_response(mailbox_json(ctx, m, d))


# ------------------------------------------------------------------------------ bulk


def _domain_field(body: dict[str, Any], errs: list[str]) -> None:
    ref = body.get("domain")
    if "domain" in body and not (isinstance(ref, str) and ref.startswith("dom_")):
        try:
            validation.domain_name(ref)
        except ValueError as exc:
            errs.append(f"domain: {exc}")


@routes.post("/v1/email-users/bulk")
async def bulk_create(request: web.Request) -> web.Response:
    """1-500 users in one job; every item is checked before anything is accepted."""
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, {"domain", "users"}, {"domain", "users"})
    _domain_field(body, errs)
    most = ctx.cfg.limits.bulk_max_items
    parsed: list[UserInput] = []
    raw = body.get("users")
    if "users" in body:
        if not isinstance(raw, list) or not 1 <= len(raw) <= most:
            errs.append(f"users: must be a list of 1 to {most} users"
                        + (f" (got {len(raw)})" if isinstance(raw, list) else ""))
        else:
            first_at: dict[str, int] = {}
            for n, item in enumerate(raw):
                user, item_errs = parse_user(ctx, item, f"users[{n}].")
                errs += item_errs
                if user is None:
                    continue
                if user.local_part in first_at:
                    errs.append(f"users[{n}].username: {user.local_part} is also "
                                f"users[{first_at[user.local_part]}]")
                else:
                    first_at[user.local_part] = n
                parsed.append(user)
    if errs:
        raise ValidationFailed(errs)
    domain = await _resolve(request, principal.account_id, body["domain"])
    require_ready(domain)

    async def produce() -> tuple[int, dict[str, Any]]:
        await require_not_blocked(ctx, domain)
        addresses = [f"{u.local_part}@{domain.name}" for u in parsed]
        # Checked again under the account lock by the insert; checking here first saves
        # hashing 500 passwords for a request that is refused anyway.
        taken = await mbstore.precheck_taken(ctx.store, addresses)
        if taken:
            raise Conflict("address_taken", "Some addresses are already taken.",
                           [f"users[{n}].username: {a} is already taken"
                            for n, a in enumerate(addresses) if a in taken])
        plain = [u.password or password.generate(ctx.cfg.passwords.generated_length)
                 for u in parsed]
        hashes = await ctx.hash_passwords(plain)
        quota = ctx.cfg.backend.postfix_dovecot.default_quota_mb
        items = [NewMailbox(u.local_part, u.name, h, u.quota_mb or quota)
                 for u, h in zip(parsed, hashes, strict=True)]
        new_ids = [ids.new_id("usr") for _ in parsed]
        # The users and their generated passwords, readable from the job until expiry.
        listing = [{"id": i, "email": a, "username": u.local_part,
                    **({"password": p} if u.password is None else {})}
                   for i, a, u, p in zip(new_ids, addresses, parsed, plain, strict=True)]

        def seal_for(job_id: str) -> bytes:
            return ctx.box.seal(json.dumps(listing).encode(), f"job-secrets:{job_id}")

        job, created = await mbstore.create_with_secrets(
            ctx.store, principal.account_id, domain, items, new_ids, seal_for,
            ctx.cfg.mailboxes.secrets_ttl_seconds)
        return 202, {"job_id": job.id, "users_count": len(created), "status": "pending",
                     "users": [{"id": c.id, "email": c.address, "username": c.local_part}
                               for c in created]}

    return await idempotent(request, principal, body, produce, _recover_bulk)


@routes.delete("/v1/email-users/bulk")
async def bulk_delete(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, {"ids"}, {"ids"})
    raw = body.get("ids")
    wanted: list[str] = raw if isinstance(raw, list) else []
    most = ctx.cfg.limits.bulk_max_items
    if "ids" in body:
        if not isinstance(raw, list) or not 1 <= len(raw) <= most:
            errs.append(f"ids: must be a list of 1 to {most} ids")
        else:
            seen: dict[str, int] = {}
            for n, i in enumerate(raw):
                if not isinstance(i, str) or not ids.has_prefix(i, "usr"):
                    errs.append(f"ids[{n}]: must be an email user id (usr_...)")
                elif i in seen:
                    errs.append(f"ids[{n}]: {i} is also ids[{seen[i]}]")
                else:
                    seen[i] = n
    if errs:
        raise ValidationFailed(errs)

    async def produce() -> tuple[int, dict[str, Any]]:
        job = await mbstore.delete_mailboxes(ctx.store, principal.account_id, wanted,
                                             _retention_seconds(ctx))
        return 202, {"job_id": job.id, "status": "pending", "users_count": len(wanted)}

    return await idempotent(request, principal, body, produce)


def _retention_seconds(ctx: ApiContext) -> float:
    return ctx.cfg.mailboxes.retention_days * 86400.0


# ------------------------------------------------------------------------- lifecycle


@routes.patch("/v1/email-users/{id}")
async def update_user(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, PATCH_FIELDS, set())
    if not body:
        errs.append("body: give at least one field to change")
    ch: dict[str, Any] = {}
    if "name" in body:
        try:
            ch["name"] = validation.display_name(body["name"])
        except ValueError as exc:
            errs.append(f"name: {exc}")
    new_pw: str | None = None
    generated = False
    if "password" in body and body.get("reset_password"):
        errs.append("password: give either password or reset_password, not both")
    elif "password" in body:
        try:
            new_pw = validation.password(body["password"], ctx.cfg.passwords.min_length)
        except ValueError as exc:
            errs.append(f"password: {exc}")
    elif "reset_password" in body:
        if body["reset_password"] is not True:
            errs.append("reset_password: must be true (a new password is generated)")
        else:
            new_pw = password.generate(ctx.cfg.passwords.generated_length)
            generated = True
    if "quota_mb" in body:
        q = body["quota_mb"]
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 1_048_576:
            errs.append("quota_mb: must be an integer from 1 to 1048576")
        else:
            ch["quota_mb"] = q
    if "daily_send_limit" in body:
        lim = body["daily_send_limit"]
        if lim is None:
            ch["clear_send_limit"] = True
        elif isinstance(lim, bool) or not isinstance(lim, int) or not 0 <= lim <= 1_000_000:
            errs.append("daily_send_limit: must be null or an integer from 0 to 1000000")
        else:
            ch["daily_send_limit"] = lim
    if "signature" in body:
        sig = body["signature"]
        if not isinstance(sig, str) or len(sig) > 10_000 or "\0" in sig:
            errs.append("signature: must be a string of at most 10000 characters")
        else:
            ch["signature"] = sig
    if "status" in body:
        if body["status"] not in ("active", "suspended"):
            errs.append("status: must be active or suspended")
        else:
            ch["suspended"] = body["status"] == "suspended"
    if errs:
        raise ValidationFailed(errs)

    async def produce() -> tuple[int, dict[str, Any]]:
        if new_pw is not None:
            (ch["password_hash"],) = await ctx.hash_passwords([new_pw])
        m, d, job = await mbstore.update_mailbox(ctx.store, principal.account_id,
                                                 request.match_info["id"],
                                                 mbstore.MailboxChanges(**ch))
        out = mailbox_json(ctx, m, d)
        out["job_id"] = job.id if job else None
        if generated:
            out["password"] = new_pw  # shown once, here
        return 200, out

    return await idempotent(request, principal, body, produce)


async def _set_suspended(request: web.Request, suspended: bool) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    m, d, job = await mbstore.update_mailbox(ctx.store, principal.account_id,
                                             request.match_info["id"],
                                             mbstore.MailboxChanges(suspended=suspended))
    out = mailbox_json(ctx, m, d)
    out["job_id"] = job.id if job else None
    return web.json_response(out, status=202 if job else 200)


@routes.post("/v1/email-users/{id}/suspend")
async def suspend_user(request: web.Request) -> web.Response:
    """Login (IMAP, SMTP AUTH) and sending refused; mail is still received."""
    return await _set_suspended(request, True)


@routes.post("/v1/email-users/{id}/resume")
async def resume_user(request: web.Request) -> web.Response:
    return await _set_suspended(request, False)


@routes.delete("/v1/email-users/{id}")
async def delete_user(request: web.Request) -> web.Response:
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    mid = request.match_info["id"]
    job = await mbstore.delete_mailboxes(ctx.store, principal.account_id, [mid],
                                         _retention_seconds(ctx), field="id")
    return web.json_response({"job_id": job.id, "status": "pending", "id": mid}, status=202)


@routes.post("/v1/email-users/{id}/restore")
async def restore_user(request: web.Request) -> web.Response:
    """Undo a delete within the retention period: the mailbox comes back with its mail."""
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    mid = request.match_info["id"]
    box, _ = await ctx.store.get_mailbox(principal.account_id, mid)
    await require_not_blocked(ctx, await ctx.store.get_domain(principal.account_id,
                                                              box.domain_id))
    job, address = await mbstore.restore_mailbox(ctx.store, principal.account_id, mid)
    return web.json_response({"job_id": job.id, "status": "pending", "id": mid,
                              "email": address}, status=202)


# ----------------------------------------------------------------------------- names


@routes.post("/v1/email-users/generate-names")
async def generate_names(request: web.Request) -> web.Response:
    """Available usernames (or addresses, when domains are given) in common patterns.
    Changes nothing, but like every POST it needs the write permission."""
    principal = await authenticate(request, "write")
    ctx = request.app[CTX]
    body = await json_body(request)
    errs = check_fields(body, {"count", "style", "names", "domains", "per_domain_max"},
                        set())
    count = body.get("count")
    given: list[tuple[str, str]] = []
    if "names" in body:
        raw = body["names"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= 500:
            errs.append("names: must be a list of 1 to 500 names")
        else:
            for n, item in enumerate(raw):
                try:
                    given.append(names.parse_person(item))
                except ValueError as exc:
                    errs.append(f"names[{n}]: {exc}")
    if count is None:
        count = len(given) or 10
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 500:
        errs.append("count: must be an integer from 1 to 500")
    style = body.get("style", "mixed")
    if style not in names.STYLES:
        errs.append(f"style: must be one of {', '.join(names.STYLES)}")
    cap = body.get("per_domain_max", ctx.cfg.mailboxes.names_per_domain_max)
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 500:
        errs.append("per_domain_max: must be an integer from 1 to 500")
    domain_refs = body.get("domains")
    if domain_refs is not None and (not isinstance(domain_refs, list)
                                    or not 1 <= len(domain_refs) <= 50):
        errs.append("domains: must be a list of 1 to 50 domains")
        domain_refs = None
    if errs:
        raise ValidationFailed(errs)
    domains: list[Domain] = []
    for n, ref in enumerate(domain_refs or []):
        try:
            domains.append(await _resolve(request, principal.account_id, ref))
        except ValidationFailed as exc:
            raise ValidationFailed([d.replace("domain:", f"domains[{n}]:", 1)
                                    for d in exc.details]) from None
    if len({d.id for d in domains}) != len(domains):
        raise ValidationFailed(["domains: each domain may be given once"])
    if domains and count > cap * len(domains):
        raise ValidationFailed([f"count: at most {cap} per domain, {cap * len(domains)} "
                                f"for {len(domains)} domains"])
    taken = await mbstore.taken_addresses(ctx.store, [d.id for d in domains])
    out = names.generate(count, style, given, [d.name for d in domains], cap, taken)
    if len(out) < count:
        raise Conflict("names_exhausted", f"Only {len(out)} available names were found.")
    return web.json_response(out)


# ------------------------------------------------------------------------- OpenAPI

_ERRS = {str(code): oas.error(code) for code in oas.WRITE_ERRORS}


def _json(schema: dict[str, Any], desc: str = "OK") -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_USER_ITEM: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["username"],
    "properties": {"username": {"type": "string"}, "name": {"type": "string"},
                             "password": {"type": "string"},
                             "quota_mb": {"type": "integer", "minimum": 1}}}
_MAILBOX = {"type": "object", "properties": {
    "id": {"type": "string"}, "email": {"type": "string"}, "username": {"type": "string"},
    "name": {"type": "string"}, "domain": {"type": "string"},
    "status": {"type": "string", "enum": list(STATUSES)},
    "quota_mb": {"type": "integer"}, "daily_send_limit": {"type": ["integer", "null"]},
    "signature": {"type": "string"}, "deleted_at": {"type": ["string", "null"]},
    "restorable_until": {"type": ["string", "null"]},
    "job_id": {"type": ["string", "null"]}, "password": {"type": "string"}}}
_JOB_REF = {"type": "object", "required": ["job_id"], "properties": {
    "job_id": {"type": "string"}, "status": {"type": "string"}}}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

_LIST_PARAMS = [oas.LIMIT, oas.OFFSET, *({"name": n, "in": "query", "required": False,
                                          "schema": {"type": "string"}}
                                         for n in ("domain", "status", "search", "sort"))]

openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/email-users": {
        "post": {"summary": "Create one email user", "operationId": "createEmailUser",
                 "parameters": [oas.IDEMPOTENCY],
                 "requestBody": _body({**_USER_ITEM, "required": ["username", "domain"],
                                       "properties": {**_USER_ITEM["properties"],
                                                      "domain": {"type": "string"}}}),
                 "responses": {"202": _json(_MAILBOX, "Accepted"), **_ERRS}},
        "get": {"summary": "List email users (filters, sort, paging)",
                "operationId": "listEmailUsers", "parameters": _LIST_PARAMS,
                "responses": {"200": _json({"type": "object", "properties": {
                    "users": {"type": "array", "items": _MAILBOX},
                    "total": {"type": "integer"}, "limit": {"type": "integer"},
                    "offset": {"type": "integer"}}}), **_ERRS}},
    },
    "/v1/email-users/bulk": {
        "post": {"summary": "Create 1-500 email users in one job", "operationId":
                 "bulkCreateEmailUsers",
                 "requestBody": _body({"type": "object", "additionalProperties": False,
                                       "required": ["domain", "users"], "properties": {
                                           "domain": {"type": "string"},
                                           "users": {"type": "array", "minItems": 1,
                                                     "maxItems": 500, "items": _USER_ITEM}}}),
                 "responses": {"202": _json({"type": "object", "required": ["job_id"],
                                             "properties": {
                     "job_id": {"type": "string"}, "status": {"type": "string"},
                     "users_count": {"type": "integer"},
                     "users": {"type": "array", "items": {"type": "object"}}}}, "Accepted"),
                     **_ERRS}},
        "delete": {"summary": "Delete email users (restorable during retention)",
                   "operationId": "bulkDeleteEmailUsers",
                   "requestBody": _body({"type": "object", "additionalProperties": False,
                                         "required": ["ids"], "properties": {"ids": {
                                             "type": "array", "minItems": 1, "maxItems": 500,
                                             "items": {"type": "string"}}}}),
                   "responses": {"202": _json(_JOB_REF, "Accepted"), **_ERRS}},
    },
    "/v1/email-users/{id}": {
        "get": {"summary": "Get an email user", "operationId": "getEmailUser",
                "parameters": _ID, "responses": {"200": _json(_MAILBOX), **_ERRS}},
        "patch": {"summary": "Update name, password (or reset_password), quota, daily send "
                             "limit, signature, status (active/suspended)",
                  "operationId": "updateEmailUser", "parameters": _ID,
                  "requestBody": _body({"type": "object", "additionalProperties": False,
                                        "properties": {
                                            "name": {"type": "string"},
                                            "password": {"type": "string"},
                                            "reset_password": {"type": "boolean"},
                                            "quota_mb": {"type": "integer"},
                                            "daily_send_limit": {"type": ["integer", "null"]},
                                            "signature": {"type": "string"},
                                            "status": {"type": "string",
                                                       "enum": ["active", "suspended"]}}}),
                  "responses": {"200": _json(_MAILBOX), **_ERRS}},
        "delete": {"summary": "Delete an email user (restorable during retention)",
                   "operationId": "deleteEmailUser", "parameters": _ID,
                   "responses": {"202": _json(_JOB_REF, "Accepted"), **_ERRS}},
    },
    "/v1/email-users/{id}/suspend": {"post": {
        "summary": "Suspend: no login, no sending, mail still received",
        "operationId": "suspendEmailUser", "parameters": _ID,
        "responses": {"200": _json(_MAILBOX), "202": _json(_MAILBOX, "Accepted"), **_ERRS}}},
    "/v1/email-users/{id}/resume": {"post": {
        "summary": "Resume a suspended email user", "operationId": "resumeEmailUser",
        "parameters": _ID,
        "responses": {"200": _json(_MAILBOX), "202": _json(_MAILBOX, "Accepted"), **_ERRS}}},
    "/v1/email-users/{id}/restore": {"post": {
        "summary": "Restore a deleted email user with its mail, within retention",
        "operationId": "restoreEmailUser", "parameters": _ID,
        "responses": {"202": _json(_JOB_REF, "Accepted"), **_ERRS}}},
    "/v1/email-users/generate-names": {"post": {
        "summary": "Available usernames (addresses when domains are given)",
        "operationId": "generateEmailUserNames",
        "requestBody": _body({"type": "object", "additionalProperties": False, "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 500},
            "style": {"type": "string", "enum": list(names.STYLES)},
            "names": {"type": "array", "items": {}},
            "domains": {"type": "array", "items": {"type": "string"}},
            "per_domain_max": {"type": "integer", "minimum": 1, "maximum": 500}}}),
        "responses": {"200": _json({"type": "array", "items": {"type": "string"}}),
                      **_ERRS}}},
}

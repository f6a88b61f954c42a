"""Request plumbing shared by every endpoint: the error envelope, authentication,
JSON bodies, paging, idempotency keys, and serialisation of times and models."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from .. import ids, ratelimit, validation
from ..errors import ApiError, NotFound, ValidationFailed
from ..log import get
from ..models import Principal
from ..store import scope, tenancy
from .context import CTX

log = get("mailforge.api")



def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def error_response(err: ApiError) -> web.Response:
    resp = web.json_response(err.body(), status=err.status)
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout",
                 409: "conflict", 411: "length_required", 413: "body_too_large",
                 414: "uri_too_long", 415: "unsupported_media_type", 429: "rate_limited"}


@web.middleware
async def envelope_middleware(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                              ) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")
    if not (0 < len(rid) <= 64 and rid.replace("-", "").isalnum()):
        rid = uuid.uuid4().hex
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            resp = await handler(request)
        except ApiError as err:
            resp = error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _STATUS_CODES.get(exc.status, "http_error")
            message = {404: "No such endpoint.", 405: "Method not allowed on this endpoint.",
                       413: "The request body is too large."}.get(exc.status, exc.reason)
            resp = error_response(ApiError(code, message, status=exc.status))
            if exc.status == 405 and "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            # Never let internals reach the client; the log has the traceback.
            log.exception("unhandled error", path=request.path, method=request.method)
            resp = error_response(ApiError("internal_error", "Internal server error.",
                                           status=500))
        resp.headers["X-Request-Id"] = rid
        log.info("request", method=request.method, path=request.path, status=resp.status,
                 ms=round((time.monotonic() - started) * 1000, 1))
        return resp


ACTING_HEADER = "X-Mailforge-Account"
LIMITERS = web.AppKey("rate_limiters", dict)  # name -> ratelimit.RateLimiter
PRINCIPAL_KEY = "mailforge_principal"
BODY_KEY = "mailforge_body"


def _unauthorized() -> ApiError:
    # One answer for every failure (unknown, wrong secret, revoked, expired): a caller
    # learns nothing about which tokens exist.
    return ApiError("unauthorized", "Missing or invalid bearer token.", status=401,
                    headers={"WWW-Authenticate": "Bearer"})


def client_addr(request: web.Request) -> str:
    return request.remote or ""


def _rate_limited(wait: float, message: str) -> ApiError:
    return ApiError("rate_limited", message, status=429,
                    headers={"Retry-After": ratelimit.retry_after(wait)})


async def authenticate(request: web.Request, permission: str) -> Principal:
    """Authenticate the bearer token and return the principal whose ``account_id``
    every store call uses.

    Resolves ``X-Mailforge-Account`` (a parent's admin token acting for one of its
    sub-accounts), applies the token's domain restriction to the store for this request
    (``store.scope``), refuses writes of a suspended account, and rate-limits per token.
    No cache: a revoked token fails on the next request on every daemon.
    """
    limiters = request.app.get(LIMITERS, {})
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized()
    result = await tenancy.authenticate(request.app[CTX].store, token.strip())
    principal = result.principal
    if principal is None:
        log.info("authentication failed", reason=result.reason, client=client_addr(request))
        failures = limiters.get("auth_failures")
        if failures is not None:
            wait = failures.take(client_addr(request))
            if wait:
                raise _rate_limited(wait, "Too many failed authentications; slow down.")
        raise _unauthorized()
    structlog.contextvars.bind_contextvars(account_id=principal.account_id,
                                           token_id=principal.token_id)
    per_token = limiters.get("tokens")
    if per_token is not None:
        wait = per_token.take(principal.token_id)
        if wait:
            raise _rate_limited(wait, "Too many requests for this token; slow down.")
    target = request.headers.get(ACTING_HEADER, "").strip()
    if target and target != principal.account_id:
        # Only an unrestricted admin token acts for another account, and only for an
        # account below its own. One answer whether the account is foreign or absent.
        denied = ApiError("forbidden", "This token cannot act for that account.",
                          [f"{ACTING_HEADER}: not a sub-account this token may act for"],
                          status=403)
        if "admin" not in principal.permissions or principal.domains is not None:
            raise denied
        row = None
        if ids.has_prefix(target, "acct"):
            row = await tenancy.descendant(request.app[CTX].store, principal.account_id,
                                           target)
        if row is None or row["status"] == "deleting":
            raise denied
        principal = dataclasses.replace(principal, account_id=row["id"],
                                        acting_from=principal.account_id,
                                        account_status=row["status"],
                                        reseller=row["reseller"])
        structlog.contextvars.bind_contextvars(account_id=principal.account_id,
                                               acting_from=principal.acting_from)
    if not principal.can(permission):
        raise ApiError("forbidden", f"This token lacks the {permission!r} permission.",
                       status=403)
    if permission != "read" and principal.account_status != "active":
        raise ApiError("account_suspended", "The account is suspended; it can only read.",
                       status=403)
    scope.set_domains(principal.domains)
    request[PRINCIPAL_KEY] = principal
    if principal.domains is not None:
        await _guard_path(request, principal)
    return principal


async def _guard_path(request: web.Request, principal: Principal) -> None:
    """Defence in depth for domain-restricted tokens, in front of every handler: an id
    in the path naming a domain, mailbox, alias or job outside the restriction is a 404
    before any handler code runs (the store applies the restriction again)."""
    assert principal.domains is not None
    for value in request.match_info.values():
        if not await tenancy.object_allowed(request.app[CTX].store, principal.account_id,
                                            value, principal.domains):
            raise NotFound()


async def _guard_body(request: web.Request, data: dict[str, Any]) -> None:
    """The same guard for the fields of a JSON body that point at domain objects:
    ``domain`` (a name or an id) and ``ids`` (mailbox or alias ids)."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal) or principal.domains is None:
        return
    store = request.app[CTX].store
    refs: list[str] = []
    dom = data.get("domain")
    if isinstance(dom, str):
        if dom.startswith("dom_"):
            refs.append(dom)
        else:
            try:
                name = validation.domain_name(dom)
            except ValueError:
                name = None  # the handler reports the invalid name
            if name is not None and not principal.allows_domain(name):
                raise NotFound("domain")
    items = data.get("ids")
    if isinstance(items, list):
        refs += [i for i in items[:1000] if isinstance(i, str)]
    for ref in refs:
        if not await tenancy.object_allowed(store, principal.account_id, ref,
                                            principal.domains):
            raise NotFound()


def require_unrestricted(principal: Principal) -> None:
    """Account-wide operations are not for a token restricted to some domains."""
    if principal.domains is not None:
        raise ApiError("forbidden", "This token is restricted to some domains; this "
                       "operation concerns the whole account.", status=403)


async def json_body(request: web.Request) -> dict[str, Any]:
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise ApiError("unsupported_media_type", "Send the body as application/json.",
                       status=415)
    try:
        # aiohttp enforces client_max_size (413); a client trickling its body is cut off.
        async with asyncio.timeout(request.app[CTX].cfg.api_limits.body_read_timeout_seconds):
            raw = await request.read()
    except TimeoutError:
        raise ApiError("request_timeout", "The request body was not received in time.",
                       status=408) from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("malformed_json", "The body is not valid JSON.", status=400) from None
    if not isinstance(data, dict):
        raise ValidationFailed(["body: must be a JSON object"])
    request[BODY_KEY] = data  # for the audit log's summary (secrets redacted there)
    await _guard_body(request, data)
    return data


def paging(request: web.Request, default: int = 50, maximum: int = 500) -> tuple[int, int]:
    errors = []
    limit, offset = default, 0
    q = request.query
    if "limit" in q:
        try:
            limit = int(q["limit"])
            if not 1 <= limit <= maximum:
                raise ValueError
        except ValueError:
            errors.append(f"limit: must be an integer from 1 to {maximum}")
    if "offset" in q:
        try:
            offset = int(q["offset"])
            if not 0 <= offset <= 10_000_000:
                raise ValueError
        except ValueError:
            errors.append("offset: must be a non-negative integer")
    if errors:
        raise ValidationFailed(errors)
    return limit, offset


def list_filters(request: web.Request) -> tuple[str | None, str | None, list[str]]:
    """The ``domain`` and ``search`` filters every list endpoint takes, validated:
    (ASCII domain or None, search text or None, error details)."""
    q = request.query
    errs: list[str] = []
    domain = None
    if q.get("domain"):
        try:
            domain = validation.domain_name(q["domain"])
        except ValueError as exc:
            errs.append(f"domain: {exc}")
    search = q.get("search") or None
    if search is not None and len(search) > 200:
        errs.append("search: must be at most 200 characters")
    return domain, search, errs


def check_fields(data: dict[str, Any], allowed: set[str], required: set[str],
                 prefix: str = "") -> list[str]:
    """Unknown and missing fields, as error details naming each."""
    errs = [f"{prefix}{k}: unknown field" for k in data if k not in allowed]
    errs += [f"{prefix}{k}: is required" for k in sorted(required) if k not in data]
    return errs


Handler = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


async def idempotent(request: web.Request, principal: Principal, body: dict[str, Any],
                     produce: Handler) -> web.Response:
    """Run *produce* once per ``Idempotency-Key``; a retry with the same body gets the
    first answer, a reuse with another body gets 422."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, payload = await produce()
        return web.json_response(payload, status=status)
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise ValidationFailed(["Idempotency-Key: must be 1-200 printable characters"])
    ctx = request.app[CTX]
    digest = hashlib.sha256(
        f"{request.method} {request.path}\n".encode()
        + json.dumps(body, sort_keys=True).encode()).digest()
    context = f"idempotency:{principal.account_id}:{key}"
    if not await ctx.store.claim_idempotent(principal.account_id, key, digest):
        prior = await ctx.store.get_idempotent(principal.account_id, key)
        if prior is None:  # released by a failed first attempt just now: try again
            raise ApiError("idempotency_key_in_use",
                           "A request with this Idempotency-Key is being handled.",
                           status=409, headers={"Retry-After": "1"})
        if bytes(prior["request_hash"]) != digest:
            raise ApiError("idempotency_key_reused",
                           "This Idempotency-Key was used with a different request.",
                           status=422)
        if prior["status"] == 0 or prior["sealed_body"] is None:
            raise ApiError("idempotency_key_in_use",
                           "A request with this Idempotency-Key is being handled.",
                           status=409, headers={"Retry-After": "1"})
        payload = json.loads(ctx.box.open(bytes(prior["sealed_body"]), context))
        resp = web.json_response(payload, status=prior["status"])
        resp.headers["Idempotent-Replayed"] = "true"
        return resp
    try:
        status, payload = await produce()
    except BaseException:
        # A refused or failed first attempt records nothing: the client may retry it.
        await ctx.store.release_idempotent(principal.account_id, key)
        raise
    sealed = ctx.box.seal(json.dumps(payload).encode(), context)
    await ctx.store.put_idempotent(principal.account_id, key, status, sealed)
    return web.json_response(payload, status=status)

"""Request plumbing shared by every endpoint: the error envelope, authentication,
JSON bodies, paging, idempotency keys, and serialisation of times and models."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from .. import ids, ratelimit, validation
from ..errors import NotFound, ServiceError, ValidationFailed
from ..log import get
from ..models import Principal
from ..store import scope, tenancy
from ..store.tokencache import TokenCache
from .context import CTX
from .errors import ApiError, error_response

log = get("mailforge.api")


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout",
                 409: "conflict", 411: "length_required", 413: "body_too_large",
                 414: "uri_too_long", 415: "unsupported_media_type", 429: "rate_limited"}


# Connection-level failures of PostgreSQL (class 08, shutdowns, "cannot connect now").
_DB_DOWN = (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.TooManyConnectionsError)
DB_RETRY_AFTER = "5"


def database_unavailable() -> ApiError:
    return ApiError("database_unavailable", "The database is unreachable; retry later.",
                    status=503, headers={"Retry-After": DB_RETRY_AFTER})


def _from_asyncpg(tb: TracebackType | None) -> bool:
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("asyncpg"):
            return True
        tb = tb.tb_next
    return False


def is_database_down(exc: BaseException) -> bool:
    """Whether *exc* says PostgreSQL cannot be reached (refused, reset, shut down, a
    pooled connection gone), as opposed to a bug or a refused statement. An OSError or
    timeout counts only when it was raised inside asyncpg: a mail server or DNS
    provider that is down is not the database."""
    if isinstance(exc, _DB_DOWN):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return True
    return isinstance(exc, OSError | TimeoutError) and _from_asyncpg(exc.__traceback__)


def _clean_request_parts(request: web.Request) -> None:
    """Path parameters and query values reach the database: refuse NUL, other control
    characters and unpaired surrogates here, for every route, before any handler or
    middleware queries anything. A path id is an opaque name: a bad one is simply not
    found."""
    for value in request.match_info.values():
        if not (value.isprintable() and len(value) <= 255):
            raise NotFound()
    errs = [f"{k[:64]!s}: must be printable text of at most 2000 characters"
            for k, v in request.query.items()
            if not (k.isprintable() and v.isprintable() and len(v) <= 2000)]
    if errs:
        raise ValidationFailed(errs)


@web.middleware
async def envelope_middleware(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                              ) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")
    if not (0 < len(rid) <= 64 and rid.isascii() and rid.replace("-", "").isalnum()):
        rid = uuid.uuid4().hex
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            _clean_request_parts(request)
            resp = await handler(request)
        except ServiceError as err:
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
        except Exception as exc:
            if is_database_down(exc):
                # One answer for every endpoint (authentication included, which is the
                # first to touch the database): the pool reconnects by itself once
                # PostgreSQL is back, no restart needed.
                log.warning("database unreachable", path=request.path,
                            error=f"{type(exc).__name__}: {exc}")
                resp = error_response(database_unavailable())
            else:
                # Never let internals reach the client; the log has the traceback.
                log.exception("unhandled error", path=request.path, method=request.method)
                resp = error_response(ApiError("internal_error", "Internal server error.",
                                               status=500))
        resp.headers["X-Request-Id"] = rid
        if request.app[CTX].cfg.api.access_log:
            # The request's id and account come from the bound context; no more fields
            # than these (each costs on every request: docs/benchmarks.md).
            log.info("request", method=request.method, path=request.path,
                     status=resp.status, ms=round((time.monotonic() - started) * 1000, 1))
        return resp


ACTING_HEADER = "X-Mailforge-Account"
LIMITERS = web.AppKey("rate_limiters", dict)  # name -> ratelimit.RateLimiter
PRINCIPAL_KEY = web.RequestKey("mailforge_principal", Principal)
# The process's token cache (daemon.py installs it); absent: every lookup queries.
TOKEN_CACHE = web.AppKey("mailforge_token_cache", TokenCache)
BODY_KEY = web.RequestKey("mailforge_body", dict)


_TOKEN_TEXT = re.compile(r"[\x21-\x7e]{1,512}")


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

    Once per request: a second call (a handler not yet converted to ``@operation``
    calling it itself, say) reuses the principal found by the first and only checks
    *permission*; it neither queries nor takes from the rate limits again. Token
    lookups go through the app's ``TOKEN_CACHE`` when it has one (a revoked token is
    refused on every daemon within milliseconds of the revoking commit:
    ``store/tokencache.py``).
    """
    if PRINCIPAL_KEY in request:
        done = request[PRINCIPAL_KEY]
        _check_permission(done, permission)
        return done
    limiters = request.app.get(LIMITERS, {})
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    # Checked before the database sees it: a token is printable ASCII (the header may
    # carry anything aiohttp could decode, surrogate escapes included).
    if scheme.lower() != "bearer" or not _TOKEN_TEXT.fullmatch(token):
        raise _unauthorized()
    result = await tenancy.authenticate(request.app[CTX].store, token,
                                        request.app.get(TOKEN_CACHE))
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
        if ids.has_prefix(target, "acct") and _TOKEN_TEXT.fullmatch(target):
            row = await request.app[CTX].store.accounts.descendant(principal.account_id,
                                                                   target)
        if row is None or row.status == "deleting":
            raise denied
        principal = dataclasses.replace(principal, account_id=row.id,
                                        acting_from=principal.account_id,
                                        account_status=row.status,
                                        reseller=row.reseller)
        structlog.contextvars.bind_contextvars(account_id=principal.account_id,
                                               acting_from=principal.acting_from)
    _check_permission(principal, permission)
    scope.set_domains(principal.domains)
    if principal.domains is not None:
        await _guard_path(request, principal)
    request[PRINCIPAL_KEY] = principal
    return principal


def _check_permission(principal: Principal, permission: str) -> None:
    if not principal.can(permission):
        raise ApiError("forbidden", f"This token lacks the {permission!r} permission.",
                       status=403)
    if permission != "read" and principal.account_status != "active":
        raise ApiError("account_suspended", "The account is suspended; it can only read.",
                       status=403)


async def _guard_path(request: web.Request, principal: Principal) -> None:
    """Defence in depth for domain-restricted tokens, in front of every handler: an id
    in the path naming a domain, mailbox, alias or job outside the restriction is a 404
    before any handler code runs (the store applies the restriction again)."""
    assert principal.domains is not None
    for value in request.match_info.values():
        if not await request.app[CTX].store.tokens.object_allowed(
                principal.account_id, value, principal.domains):
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
        if not await store.tokens.object_allowed(principal.account_id, ref,
                                                 principal.domains):
            raise NotFound()


def require_unrestricted(principal: Principal) -> None:
    """Account-wide operations are not for a token restricted to some domains."""
    if principal.domains is not None:
        raise ApiError("forbidden", "This token is restricted to some domains; this "
                       "operation concerns the whole account.", status=403)


MAX_JSON_DEPTH = 32


def _bad_text(value: str) -> bool:
    """NUL (PostgreSQL text cannot hold it) or an unpaired surrogate (not encodable as
    UTF-8, so nothing downstream could store or send it)."""
    if "\0" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_json(raw: bytes, depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Parse a request body: a JSON object at most *depth* levels deep whose strings
    (keys included) hold no NUL and no unpaired surrogate; numbers finite. One place
    for every endpoint, so no handler or middleware ever sees such a value."""
    try:
        data = json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise ValidationFailed([f"body: nested more than {depth} levels deep"]) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError("malformed_json", "The body is not valid JSON.", status=400) from None
    if not isinstance(data, dict):
        raise ValidationFailed(["body: must be a JSON object"])
    errs: list[str] = []
    # Iterative walk: a deep body cannot exhaust the stack here either.
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack and len(errs) < 20:
        value, path, level = stack.pop()
        if isinstance(value, dict | list) and level > depth:
            raise ValidationFailed([f"{(path or 'body')[:120]}: nested more than {depth} "
                                    "levels deep"])
        if isinstance(value, dict):
            for k, v in value.items():
                key = k if not _bad_text(k) else repr(k)[1:-1][:64]
                child = f"{path}.{key}" if path else key
                if _bad_text(k):
                    errs.append(f"{child}: a field name must not contain NUL or unpaired "
                                "surrogates")
                stack.append((v, child, level + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{n}]", level + 1) for n, v in enumerate(value))
        elif isinstance(value, str) and _bad_text(value):
            errs.append(f"{path}: must not contain NUL or unpaired surrogate characters")
    if errs:
        raise ValidationFailed(sorted(errs))
    return data


async def read_body(request: web.Request) -> bytes:
    """The raw body within the configured time (408 otherwise) and size (413, aiohttp's
    client_max_size). Every route that reads a body goes through here."""
    try:
        async with asyncio.timeout(request.app[CTX].cfg.api_limits.body_read_timeout_seconds):
            return await request.read()
    except TimeoutError:
        raise ApiError("request_timeout", "The request body was not received in time.",
                       status=408) from None


async def json_body(request: web.Request) -> dict[str, Any]:
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise ApiError("unsupported_media_type", "Send the body as application/json.",
                       status=415)
    data = parse_json(await read_body(request))
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

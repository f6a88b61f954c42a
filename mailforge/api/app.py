"""Assembles the aiohttp application: middlewares, routes, health.

Each api module defines ``routes`` (a RouteTableDef) and ``openapi_paths`` (its part of
the OpenAPI document); registering a module is one line in ``MODULES``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from aiohttp import web

from .. import ratelimit
from . import accounts, aliases, audit, dns, domains, email_users, inbox, jobs, oas, openapi, tokens
from .context import CTX, ApiContext
from .http import LIMITERS, envelope_middleware

routes = web.RouteTableDef()
HEALTH_CHECKS = web.AppKey("health_checks", list)


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        async with ctx.store.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        db = "ok"
    except Exception:
        db = "unreachable"
    status = 200 if db == "ok" else 503
    return web.json_response({"status": "ok" if status == 200 else "degraded",
                              "database": db}, status=status)


openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/health": {"get": {
        "summary": "Liveness and database reachability (no authentication)",
        "operationId": "health", "tags": ["health"], "security": [],
        "responses": {
            "200": oas.ok("Healthy.", oas.obj({"status": {"const": "ok"},
                                               "database": {"type": "string"}},
                                              ("status", "database"))),
            "503": oas.ok("The database is unreachable.", oas.obj(
                {"status": {"type": "string"}, "database": {"type": "string"}},
                ("status", "database"))),
        },
    }},
}


# Every module serving routes; its ``openapi_paths`` documents them.
MODULES: tuple[ModuleType, ...] = (
    domains,
    dns,
    email_users,
    aliases,
    inbox,
    jobs,
    tokens,
    accounts,
    audit,
    openapi,
)
API_MODULES = web.AppKey("api_modules", tuple)


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[envelope_middleware, audit.audit_middleware],
                          client_max_size=ctx.cfg.api.max_body_bytes)
    app[CTX] = ctx
    lim = ctx.cfg.api_limits
    app[LIMITERS] = {
        "tokens": ratelimit.RateLimiter(lim.requests_per_second, lim.burst),
        "auth_failures": ratelimit.RateLimiter(lim.auth_failures_per_minute / 60.0,
                                               lim.auth_failures_per_minute),
    }
    app[API_MODULES] = (sys.modules[__name__], *MODULES)
    for module in app[API_MODULES]:
        app.router.add_routes(module.routes)
    openapi.install(app, app[API_MODULES])
    return app

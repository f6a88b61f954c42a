"""Assembles the aiohttp application: middlewares, routes, health.

Each api module defines ``routes`` (a RouteTableDef) whose operations are declared with
``api/operation.py`` (the OpenAPI document is generated from them); registering a
module is one line in ``MODULES``.
"""

from __future__ import annotations

import sys
from types import ModuleType

from aiohttp import web

from .. import ratelimit
from ..schema.meta import Health
from ..service.context import ServiceContext
from . import (
    accounts,
    aliases,
    audit,
    connected,
    dns,
    domains,
    email_users,
    inbox,
    jobs,
    openapi,
    tokens,
)
from .context import CTX
from .http import LIMITERS, envelope_middleware
from .operation import operation, reply

routes = web.RouteTableDef()
HEALTH_CHECKS = web.AppKey("health_checks", list)


@operation(routes, "GET", "/v1/health", id="health", tag="health",
           summary="Liveness and database reachability (no authentication)",
           description="Answers 200 while the daemon serves and PostgreSQL answers, 503 "
                       "with database unreachable otherwise. For load balancers and "
                       "monitoring; needs no token.",
           permission=None, answers={200: Health, 503: Health})
async def health(request: web.Request) -> web.StreamResponse:
    ok = await request.app[CTX].store.reachable()
    return reply(Health(status="ok" if ok else "degraded",
                        database="ok" if ok else "unreachable"), status=200 if ok else 503)


# Every module serving routes.
MODULES: tuple[ModuleType, ...] = (
    domains,
    dns,
    email_users,
    connected,
    aliases,
    inbox,
    jobs,
    tokens,
    accounts,
    audit,
    openapi,
)
API_MODULES = web.AppKey("api_modules", tuple)


def make_app(ctx: ServiceContext) -> web.Application:
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
    openapi.install(app)
    return app

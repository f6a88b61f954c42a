"""Assembles the aiohttp application: middlewares, routes, health."""

from __future__ import annotations

from aiohttp import web

from . import aliases, domains, email_users, jobs
from .context import CTX, ApiContext
from .http import envelope_middleware

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


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[envelope_middleware],
                          client_max_size=ctx.cfg.api.max_body_bytes)
    app[CTX] = ctx
    for table in (routes, domains.routes, email_users.routes, jobs.routes,
                  aliases.routes):
        app.router.add_routes(table)
    return app

"""Where API handlers find the service context: one per application."""

from __future__ import annotations

from aiohttp import web

from ..service.context import ServiceContext

CTX = web.AppKey("mailforge_ctx", ServiceContext)

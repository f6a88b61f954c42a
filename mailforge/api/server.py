"""The HTTP server around the API application: aiohttp's, plus a timeout on the request
line and headers.

aiohttp bounds a body only where a handler reads it (``http.read_body``) and closes a
connection that stays idle for ``keepalive_timeout``, but a client that keeps sending
a header a byte at a time holds a connection (and its parser's memory) for as long as
that idle timer allows, and there is no server option for it. ``HeaderTimeoutHandler``
starts a timer at the first byte of a request and closes the connection when the
request line and headers are not complete within ``header_read_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..log import get

log = get("mailforge.api")


class HeaderTimeoutHandler(RequestHandler):
    """aiohttp's connection handler with a deadline on each request's head."""

    def __init__(self, manager: Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

    def _head_pending(self) -> bool:
        # Bytes of a request arrived, but no complete request line + headers yet: the
        # parser has emitted no message and no request is being handled.
        return not self._messages and not self._request_in_progress

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_pending():
            if self._header_deadline is None and data:
                self._header_deadline = self._loop.call_later(self._header_timeout,
                                                              self._header_timed_out)
        elif self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timed_out(self) -> None:
        self._header_deadline = None
        if self.transport is not None and self._head_pending():
            log.info("request headers not received in time: connection closed",
                     peer=str(self.peername), seconds=self._header_timeout)
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)


class _Server(Server):
    def __init__(self, base: Server, header_timeout: float) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation, loop=base._loop,
                         **base._kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return HeaderTimeoutHandler(self, loop=self._loop,
                                    header_timeout=self._header_timeout, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` whose connections have a header read timeout."""

    def __init__(self, app: web.Application, *, header_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> Server:
        return _Server(await super()._make_server(), self._header_timeout)

"""Issue 6 events: signed webhooks for new inbound mail, bounces and job completion,
and a failing receiver retried from the persisted queue."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from dnshelp import daemon_overlay
from support import message, ready_domain, smtp_send, wait_job

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def loopback_receivers(sandbox: Any) -> Iterator[Any]:
    """The daemon with loopback allowed for outbound connections
    (``outbound.allow_networks``): this module's receivers listen on 127.0.0.1, which
    the outbound guard refuses by default."""
    with daemon_overlay(sandbox, {"outbound": {"allow_networks": ["127.0.0.0/8"]}}):
        yield sandbox


@pytest_asyncio.fixture(loop_scope="session")
async def api(loopback_receivers: Any) -> AsyncIterator[Any]:
    """A client of its own: the session client's pooled connections point at the
    daemon this module restarted."""
    from conftest import ApiClient

    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield ApiClient(s, loopback_receivers.info["api_url"],
                        loopback_receivers.info["admin_token"])


async def test_webhooks_signed_for_inbound_mail_and_job_completion(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = {"left": 1}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if fail_first["left"]:
            fail_first["left"] -= 1
            return web.Response(status=503)  # the first delivery fails: retried later
        received.append((dict(request.headers), body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        status, wh = await api.post("/v1/webhooks", {
            "url": f"http://127.0.0.1:{port}/hook",
            "events": ["message.received", "job.completed"]})
        assert status == 201, wh
        secret = wh["secret"]
        await ready_domain(api, unique_domain)
        status, user = await api.post("/v1/email-users", {"domain": unique_domain,
                                                          "username": "hooked"})
        assert status == 202, user
        assert (await wait_job(api, user["job_id"]))["status"] == "completed"
        smtp = sandbox.info["smtp"]
        await asyncio.to_thread(smtp_send, smtp["host"], smtp["port"], "x@outside.example",
                                [user["email"]],
                                message("x@outside.example", user["email"], "ping hook"))

        def events() -> dict[str, dict[str, Any]]:
            out = {}
            for headers, body in received:
                assert headers["X-Mailforge-Signature"] == "sha256=" + hmac.new(
                    secret.encode(), body, hashlib.sha256).hexdigest()
                ev = json.loads(body)
                out[f"{ev['type']}:{ev['data'].get('email') or ev['data'].get('job_id')}"] = ev
            return out

        deadline = time.monotonic() + 20
        want_mail = f"message.received:{user['email']}"
        want_job = f"job.completed:{user['job_id']}"
        while time.monotonic() < deadline and not {want_mail, want_job} <= events().keys():
            await asyncio.sleep(0.1)
        got = events()
        assert want_mail in got and want_job in got, list(got)
        assert got[want_mail]["data"]["subject"] == "ping hook"
        assert got[want_mail]["data"]["id"].startswith("msg_")
        # The delivery refused with 503 is retried from the queue (backoff ~5 s).
        dl: dict[str, Any] = {}
        while time.monotonic() < deadline + 10:
            status, dl = await api.get(f"/v1/webhooks/{wh['id']}/deliveries")
            assert status == 200
            if any(d["attempts"] >= 2 and d["state"] == "delivered"
                   for d in dl["deliveries"]):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the failed delivery was not retried: {dl}")
    finally:
        await api.delete(f"/v1/webhooks/{wh['id']}")
        await runner.cleanup()

"""Issue 5: one error envelope for every failure the client can cause (unknown route,
405, malformed JSON, wrong content type, auth, body too large), per-token rate limiting
with 429 + Retry-After, and no stack trace in any answer."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from typing import Any

import aiohttp
import pytest

from mailforge import config as config_mod

pytestmark = pytest.mark.stack


def _envelope(body: Any, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"], body
    text = str(body)
    assert "Traceback" not in text and "File \"" not in text


async def test_every_client_error_has_the_envelope(sandbox: Any, api: Any) -> None:
    url = sandbox.info["api_url"]
    status, body = await api.get("/v1/no-such-thing")
    assert status == 404
    _envelope(body, "not_found")
    status, body = await api.put("/v1/account", {"x": 1})
    assert status == 405
    _envelope(body, "method_not_allowed")
    status, body = await api.with_token(None).get("/v1/account")
    assert status == 401
    _envelope(body, "unauthorized")
    status, body = await api.with_token("mf_tok_0123.nope").get("/v1/account")
    assert status == 401
    _envelope(body, "unauthorized")
    auth = {"Authorization": f"Bearer {sandbox.info['admin_token']}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/auth/tokens", data=b"{not json",
                          headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 400
            _envelope(await r.json(), "malformed_json")
        async with s.post(url + "/v1/auth/tokens", data=b"name=x",
                          headers={**auth, "Content-Type": "text/plain"}) as r:
            assert r.status == 415
            _envelope(await r.json(), "unsupported_media_type")
        async with s.post(url + "/v1/auth/tokens", data=b"[1, 2]",
                          headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 400
            _envelope(await r.json(), "invalid_request")
        limit = config_mod.load(sandbox.info["config_path"]).api.max_body_bytes
        big = b'{"name": "' + b"x" * (limit + 10) + b'"}'
        async with s.post(url + "/v1/auth/tokens", data=big,
                          headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 413
            _envelope(await r.json(), "body_too_large")
    # A bad request names the field.
    status, body = await api.post("/v1/auth/tokens", {"name": "", "permissions": ["root"],
                                                     "bogus": 1})
    assert status == 400
    details = "\n".join(body["error"]["details"])
    assert "name:" in details and "permissions:" in details and "bogus: unknown" in details


async def test_per_token_rate_limit_answers_429_with_retry_after(
        sandbox: Any, api: Any) -> None:
    cfg = config_mod.load(sandbox.info["config_path"]).api_limits
    status, tok = await api.post("/v1/auth/tokens", {
        "name": f"flood-{secrets.token_hex(3)}", "permissions": ["read"]})
    assert status == 201
    flood = api.with_token(tok["token"])
    url = sandbox.info["api_url"]
    hdrs = {"Authorization": f"Bearer {tok['token']}"}
    cap = cfg.burst * 4

    async def one(s: aiohttp.ClientSession) -> tuple[int, str | None, Any]:
        async with s.get(url + "/v1/account", headers=hdrs) as r:
            return r.status, r.headers.get("Retry-After"), await r.json()

    # Waves of concurrent requests until the bucket runs dry (the server answers faster
    # than the bucket refills), bounded.
    results: list[tuple[int, str | None, Any]] = []
    async with aiohttp.ClientSession() as s:
        while len(results) < cap and not any(st == 429 for st, _, _ in results):
            results += await asyncio.gather(*(one(s) for _ in range(100)))
    statuses = [st for st, _, _ in results]
    assert statuses.count(200) >= cfg.burst, statuses.count(200)
    assert set(statuses) <= {200, 429}, set(statuses)
    limited = [(ra, b) for st, ra, b in results if st == 429]
    assert limited, f"no 429 after {len(results)} requests (burst {cfg.burst})"
    retry_after, body = limited[0]
    _envelope(body, "rate_limited")
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    # Another token is not affected; after Retry-After the flooding token works again.
    assert (await api.get("/v1/account"))[0] == 200
    await asyncio.sleep(int(retry_after))
    assert (await flood.get("/v1/account"))[0] == 200


async def test_slow_body_is_cut_off_with_408(sandbox: Any) -> None:
    """A client trickling its body is answered 408 once the read timeout passes. Served
    by an in-process API on the sandbox's database with a short timeout (the daemon's
    default, 30 s, is too long for a test)."""
    import dataclasses

    from aiohttp import web

    from mailforge import secretbox
    from mailforge.api.app import make_app
    from mailforge.service.context import ServiceContext
    from mailforge.store.store import Store, create_pool

    cfg = config_mod.load(sandbox.info["config_path"])
    cfg = dataclasses.replace(cfg, api_limits=dataclasses.replace(
        cfg.api_limits, body_read_timeout_seconds=0.5))
    pool = await create_pool(cfg.database.dsn, 1, 2)
    runner = None
    try:
        store = Store(pool, cfg.host.name)
        _, token, _ = await store.tokens.create(await store.accounts.ensure_root(), "slow",
                                               ["admin"])
        ctx = ServiceContext(cfg=cfg, store=store, box=secretbox.from_config(cfg))
        runner = web.AppRunner(make_app(ctx), shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((f"POST /v1/auth/tokens HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: 100\r\n\r\n{{\"name\": ").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 408"), head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        _envelope(json.loads(await reader.readexactly(length)), "request_timeout")
        writer.close()
        await writer.wait_closed()
    finally:
        if runner is not None:
            await runner.cleanup()
        await pool.close()

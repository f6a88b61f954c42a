"""Issue 9, items 8 and 10, against the real stack: the API as a hostile client meets it.

- Hostile bodies, path ids, query values and headers on every endpoint of the OpenAPI
  document: a 4xx naming the field, never a 5xx (nested JSON 100,000 deep, NUL,
  unpaired surrogates, huge numbers, wrong types).
- Slowly sent headers: the connection is closed within the header timeout; a trickled
  body on POST /v1/email-users: 408.
- The reputation block holds whatever spelling of the domain name is used.
- PostgreSQL stopped: every endpoint answers 503 ``database_unavailable`` with
  Retry-After; started again: the same daemon serves again, no restart.
- SIGKILL between taking an Idempotency-Key and answering: a retry with the same key
  answers with the first attempt's job, and only one job exists.
- A hypothesis run of 2,000+ generated bodies over every write endpoint: no 5xx, and a
  refused request changes nothing (fingerprint of the store, the Postfix maps and
  Dovecot's auth database before and after each refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ready_domain, wait_job

from mailforge import config as config_mod
from mailforge import secretbox
from mailforge.api.app import make_app
from mailforge.api.server import ApiRunner
from mailforge.backends.postfix_dovecot.layout import Layout
from mailforge.service.context import ServiceContext
from mailforge.store.store import Store, create_pool

pytestmark = pytest.mark.stack

METHODS = ("get", "post", "put", "patch", "delete")


def _envelope(body: Any, status: int) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, (status, body)
    err = body["error"]
    assert isinstance(err.get("code"), str) and err.get("message"), body
    assert "Traceback" not in json.dumps(body)
    return dict(err)


async def _document(api: Any) -> dict[str, Any]:
    status, doc = await api.get("/v1/openapi.json")
    assert status == 200, doc
    return dict(doc)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def _fill(path: str, value: str) -> str:
    out = path
    while "{" in out:
        start = out.index("{")
        out = out[:start] + value + out[out.index("}", start) + 1:]
    return out


async def _raw(api: Any, method: str, path: str, data: bytes,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json",
            **(headers or {})}
    async with api.session.request(method, api.base_url + path, data=data,
                                   headers=hdrs) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")


# ------------------------------------------------------------------ hostile input


async def test_hostile_bodies_on_every_json_endpoint_are_4xx(api: Any) -> None:
    doc = await _document(api)
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep_objects = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    surrogate = b'{"name": "x\\ud800y", "username": "a"}'
    nul_key = b'{"na\\u0000me": "x"}'
    checked = 0
    for method, path, op in _operations(doc):
        if "requestBody" not in op:
            continue
        url = _fill(path, "usr_" + "0" * 20)
        for raw in (deep, deep_objects, surrogate, nul_key, b'{"a": 1e99999}',
                    b'{"a": NaN}', b"[1, 2]", b'"text"', b'{"a": ' + b"9" * 10_000 + b"}"):
            status, body = await _raw(api, method, url, raw)
            assert 400 <= status < 500, (method, path, raw[:40], status, body)
            _envelope(body, status)
            checked += 1
        if "{" not in path:  # no path id to miss first: the body's problem is named
            status, body = await _raw(api, method, url, surrogate)
            assert status == 400, (method, path, body)
            assert any(d.startswith("name: must not contain NUL or unpaired surrogate")
                       for d in _envelope(body, status)["details"]), body
            status, body = await _raw(api, method, url, deep)
            assert status == 400 and "nested more than" in str(body), (method, path, body)
    assert checked > 100


async def test_nul_and_control_characters_in_path_ids_and_queries_are_4xx(api: Any) -> None:
    doc = await _document(api)
    seen = 0
    for method, path, _op in _operations(doc):
        if "{" not in path:
            continue
        for bad in ("%00", "usr_%00abc", "dom_%E2%80%A8x", "%ED%A0%80", "x%0Ay", "%7F",
                    "a" * 300):
            url = _fill(path, bad)
            status, body = await api.request(method, url, json={})
            assert 400 <= status < 500, (method, url, status, body)
            _envelope(body, status)
            seen += 1
    assert seen > 50
    for query in ("search=%00", "domain=%00x.test", "search=a%0Ab", "status=%00"):
        status, body = await api.get("/v1/email-users?" + query)
        assert status == 400, (query, body)
        assert _envelope(body, status)["details"][0].split(":")[0] in ("search", "domain",
                                                                       "status")
    status, body = await api.get("/v1/audit?action=%00")
    assert status == 400, body


async def test_mailbox_creation_names_the_bad_field(api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"domain": unique_domain + "\0", "username": "a"}, "domain"),
        ({"domain": "\0", "username": "a"}, "domain"),
        ({"domain": unique_domain, "username": "a\0b"}, "username"),
        ({"domain": unique_domain, "username": "a\ud800"}, "username"),
        ({"domain": unique_domain, "username": "a", "name": "\udfff"}, "name"),
        ({"domain": unique_domain, "username": "a", "quota_mb": 10 ** 40}, "quota_mb"),
        ({"domain": unique_domain, "username": "a", "quota_mb": "5"}, "quota_mb"),
        ({"domain": unique_domain, "username": 5}, "username"),
        ({"domain": [unique_domain], "username": "a"}, "domain"),
        ({"domain": {"x": 1}, "username": "a"}, "domain"),
        ({"domain": unique_domain, "username": {"a": [[[]]]}}, "username"),
    ]
    for body, field in cases:
        status, answer = await api.post("/v1/email-users", body)
        assert 400 <= status < 500, (body, status, answer)
        details = _envelope(answer, status).get("details", [])
        assert any(d.startswith(f"{field}:") or d.startswith(f"{field}[") for d in details), \
            (body, answer)
    bulk = [({"domain": unique_domain, "users": "x"}, "users"),
            ({"domain": unique_domain, "users": [{"username": "a\0"}]}, "users[0].username"),
            ({"domain": "\0", "users": [{"username": "a"}]}, "domain")]
    for body, field in bulk:
        status, answer = await api.post("/v1/email-users/bulk", body)
        assert status == 400, (body, answer)
        assert any(d.startswith(f"{field}:") for d in _envelope(answer, status)["details"])
    status, users = await api.get("/v1/email-users", params={"domain": unique_domain})
    assert status == 200 and users["total"] == 0, users


async def test_hostile_headers_are_refused_before_the_database(sandbox: Any,
                                                               api: Any) -> None:
    for key in ("a b", "ключ", "x" * 201, ""):
        status, body = await api.post("/v1/auth/tokens", {"name": "k", "permissions": ["read"]},
                                      headers={"Idempotency-Key": key})
        assert status == 400, (key, body)
        assert _envelope(body, status)["details"][0].startswith("Idempotency-Key:")
    port = int(sandbox.info["api_url"].rsplit(":", 1)[1])
    for header in (b"Authorization: Bearer mf_tok_\xff\xfe.secret",
                   b"Authorization: Bearer mf_tok_" + "é".encode() + b".s",
                   b"X-Mailforge-Account: acct_\xed\xa0\x80\r\nAuthorization: Bearer "
                   + sandbox.info["admin_token"].encode()):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/account HTTP/1.1\r\nHost: x\r\n" + header
                     + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        status = int(head.split(b" ", 2)[1])
        assert status in (400, 401, 403), head[:200]


async def _block(sandbox: Any, domain_id: str) -> None:
    """Block a domain by its reputation: a block needs reputation.block_min_events (3)
    complaints; five, recorded as the inbound scanner records reports about messages
    we sent."""
    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        for _ in range(5):
            await conn.execute("INSERT INTO mail_reputation_events (domain_id, kind, ref) "
                               "VALUES ($1, 'complaint', $2)", domain_id, secrets.token_hex(8))
    finally:
        await conn.close()


async def test_blocked_reputation_holds_for_every_spelling(sandbox: Any, api: Any,
                                                           unique_domain: str) -> None:
    dom = await ready_domain(api, unique_domain)
    await _block(sandbox, dom["id"])
    label, tld = unique_domain.split(".")
    for spelling in (unique_domain, unique_domain.upper(), unique_domain + ".",
                     f"{label}\u3002{tld}", f"{label}\uff0e{tld}", dom["id"]):
        status, body = await api.post("/v1/email-users", {"domain": spelling,
                                                          "username": "blocked"})
        assert status == 409, (spelling, body)
        assert _envelope(body, status)["code"] == "domain_reputation_blocked"
        status, body = await api.post("/v1/email-users/bulk", {
            "domain": spelling, "users": [{"username": "blocked"}]})
        assert status == 409 and body["error"]["code"] == "domain_reputation_blocked", body
    status, users = await api.get("/v1/email-users", params={"domain": unique_domain})
    assert status == 200 and users["total"] == 0, users


async def test_blocked_domain_gets_no_new_sending_identity(sandbox: Any, api: Any,
                                                            make_domain: Any) -> None:
    """A blocked domain's senders get no way around the block: no restored mailbox, no
    alias, no alias domain either way round (each would be a new sending identity)."""
    blocked, other = make_domain(), make_domain()
    dom = await ready_domain(api, blocked)
    await ready_domain(api, other)
    status, m = await api.post("/v1/email-users", {"domain": blocked, "username": "gone"})
    assert status == 202, m
    assert (await wait_job(api, m["job_id"]))["status"] == "completed"
    status, d = await api.delete(f"/v1/email-users/{m['id']}")
    assert status == 202, d
    assert (await wait_job(api, d["job_id"]))["status"] == "completed"
    await _block(sandbox, dom["id"])
    attempts = [
        ("/v1/email-users/" + m["id"] + "/restore", {}),
        ("/v1/aliases", {"domain": blocked, "username": "sales",
                         "targets": [f"x@{other}"]}),
        ("/v1/alias-domains", {"domain": blocked, "target": other}),
        ("/v1/alias-domains", {"domain": other, "target": blocked}),
    ]
    for path, body in attempts:
        status, err = await api.post(path, body)
        assert status == 409, (path, body, err)
        assert err["error"]["code"] == "domain_reputation_blocked", (path, err)


# ------------------------------------------------------------------ timeouts


@contextlib.asynccontextmanager
async def _private_api(sandbox: Any, **limits: float) -> AsyncIterator[tuple[int, str]]:
    """An in-process API on the sandbox's database, served like the daemon serves it
    (ApiRunner) but with short timeouts; yields (port, admin token)."""
    cfg = config_mod.load(sandbox.info["config_path"])
    cfg = dataclasses.replace(cfg, api_limits=dataclasses.replace(cfg.api_limits, **limits))
    pool = await create_pool(cfg.database.dsn, 1, 2)
    runner = None
    try:
        store = Store(pool, cfg.host.name)
        _, token, _ = await store.tokens.create(await store.accounts.ensure_root(), "timeouts",
                                               ["admin"])
        ctx = ServiceContext(cfg=cfg, store=store, box=secretbox.from_config(cfg))
        runner = ApiRunner(make_app(ctx), shutdown_timeout=0.5,
                           header_timeout=cfg.api_limits.header_read_timeout_seconds)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1], token
    finally:
        if runner is not None:
            await runner.cleanup()
        await pool.close()


async def test_slow_headers_are_cut_off(sandbox: Any) -> None:
    async with _private_api(sandbox, header_read_timeout_seconds=1.0) as (port, token):
        # Half a request line, then silence: closed within the timeout, no answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/acc")
        await writer.drain()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        assert 0.8 < time.monotonic() - started < 3
        writer.close()
        # Headers trickled a byte at a time, each well within any idle timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        head = f"GET /v1/account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        closed = False
        for ch in head.encode() * 5:
            try:
                writer.write(bytes([ch]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            await asyncio.sleep(0.05)
            if reader.at_eof():
                closed = True
                break
        if not closed:
            assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        assert time.monotonic() - started < 3
        writer.close()
        # A client that sends its request promptly is served, also on a kept-alive
        # connection that idles longer than the header timeout between requests.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (head + "\r\n").encode()
        for _ in range(2):
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(1.5)
        writer.close()


async def test_trickled_body_on_mailbox_creation_is_408(sandbox: Any, api: Any,
                                                        unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    async with _private_api(sandbox, body_read_timeout_seconds=0.5) as (port, token):
        for path in ("/v1/email-users", "/v1/email-users/bulk"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write((f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {token}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                          f'{{"domain": "{unique_domain}", ').encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 408"), (path, head)
            writer.close()


# ------------------------------------------------------------------ PostgreSQL down


async def test_postgres_stopped_every_endpoint_503_then_recovers(sandbox: Any, api: Any,
                                                                 unique_domain: str) -> None:
    doc = await _document(api)
    pidfile = sandbox.run_dir / "daemon.pid"
    daemon_pid = pidfile.read_text().split()[0] if pidfile.exists() else None
    seen = 0
    sandbox.stop_service("postgres")
    try:
        assert not sandbox.running("postgres")
        for method, path, op in _operations(doc):
            url = _fill(path, "usr_" + "0" * 20)
            body = {} if "requestBody" in op else None
            # The unauthenticated MTA-STS policy and autoconfig look the domain up.
            params = {"domain": unique_domain} if op.get("security") == [] else None
            status, answer = await api.request(method, url, json=body, params=params)
            if path == "/v1/health":
                assert status == 503 and answer["database"] == "unreachable", answer
                continue
            if path in ("/v1/openapi.json", "/v1/docs"):  # need no database
                assert status == 200, (method, path, status, answer)
                continue
            assert status == 503, (method, path, status, answer)
            err = _envelope(answer, status)
            assert err["code"] == "database_unavailable", answer
            assert err["message"] == "The database is unreachable; retry later.", answer
            seen += 1
        # The Retry-After header comes with it.
        async with api.session.get(api.base_url + "/v1/account",
                                   headers={"Authorization": f"Bearer {api.token}"}) as r:
            assert r.status == 503 and int(r.headers["Retry-After"]) > 0
    finally:
        sandbox.start_service("postgres")
    assert seen > 40
    # The same daemon serves again once PostgreSQL is back: no restart.
    deadline = time.monotonic() + 20
    while True:
        status, _ = await api.get("/v1/account")
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 200
    dom = await ready_domain(api, unique_domain)
    status, user = await api.post("/v1/email-users", {"domain": dom["name"],
                                                      "username": "after"})
    assert status == 202, user
    assert (await wait_job(api, user["job_id"], timeout=60))["status"] == "completed"
    if daemon_pid is not None:
        assert pidfile.read_text().split()[0] == daemon_pid


# ------------------------------------------------------------------ SIGKILL + key


def _spawn_daemon(info: dict[str, Any], **env: str) -> subprocess.Popen[bytes]:
    log = open(Path(info["logs"]["daemon"]).with_name("daemon-hostile.log"), "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "mailforge", "-c", info["config_path"], "run"],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            assert proc is None or proc.poll() is None, "daemon exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url + "/v1/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("daemon did not become healthy")


async def _jobs_of(dsn: str, addresses: list[str]) -> tuple[list[str], list[str]]:
    """(ids of the mailboxes with these addresses, ids of the jobs creating them)."""
    conn = await asyncpg.connect(dsn)
    try:
        mids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM mailboxes WHERE address = ANY($1::text[]) ORDER BY address",
            addresses)]
        jobs = [r["job_id"] for r in await conn.fetch(
            "SELECT DISTINCT ji.job_id FROM job_items ji JOIN jobs j ON j.id = ji.job_id "
            "WHERE ji.object_id = ANY($1::text[]) AND j.type = 'email_user_create'", mids)]
        return mids, jobs
    finally:
        await conn.close()


# The window between the job's commit and the recorded answer is a few statements long;
# a kill from outside lands in it too rarely to test, so the daemon is told to kill
# itself there (MAILFORGE_TEST_CRASH_AFTER, test-only, read at start-up).
@pytest.mark.parametrize("point", ["idempotency_job", "idempotency_claim"])
async def test_sigkill_between_key_and_answer_then_retry_returns_first_job(
        sandbox: Any, api: Any, unique_domain: str, point: str) -> None:
    info = sandbox.info
    await ready_domain(api, unique_domain)
    names = [f"k{n}" for n in range(3)]
    addresses = [f"{n}@{unique_domain}" for n in names]
    bulk = {"domain": unique_domain, "users": [{"username": n} for n in names]}
    single = {"domain": unique_domain, "username": "solo"}
    key_bulk, key_single = secrets.token_hex(12), secrets.token_hex(12)
    sandbox.stop_service("daemon")
    try:
        for body, key, path in ((bulk, key_bulk, "/v1/email-users/bulk"),
                                (single, key_single, "/v1/email-users")):
            # A daemon that kills itself at *point* (test-only fault injection).
            proc = _spawn_daemon(info, MAILFORGE_TEST_CRASH_AFTER=point)
            try:
                await _wait_healthy(info["api_url"], proc)
                with pytest.raises(aiohttp.ClientError):
                    await api.post(path, body, headers={"Idempotency-Key": key})
                assert proc.wait(timeout=10) == -signal.SIGKILL
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
    finally:
        sandbox.start_service("daemon")
    mids, jobs = await _jobs_of(info["postgres_dsn"], addresses)
    solo_mids, solo_jobs = await _jobs_of(info["postgres_dsn"], [f"solo@{unique_domain}"])
    if point == "idempotency_job":  # the first attempt committed its job, then died
        assert len(mids) == 3 and len(jobs) == 1, (mids, jobs)
        assert len(solo_mids) == 1 and len(solo_jobs) == 1
    else:  # died before creating anything: the retry does the work
        assert mids == [] and jobs == [] and solo_mids == []
    # Retries with the same keys: at once (the claimant's process is gone), twice.
    answers = []
    for _ in range(2):
        status, got = await api.post("/v1/email-users/bulk", bulk,
                                     headers={"Idempotency-Key": key_bulk})
        assert status == 202, got
        answers.append(got)
    assert answers[0]["job_id"] == answers[1]["job_id"]
    assert sorted(u["email"] for u in answers[0]["users"]) == addresses
    status, solo = await api.post("/v1/email-users", single,
                                  headers={"Idempotency-Key": key_single})
    assert status == 202 and solo["email"] == f"solo@{unique_domain}", solo
    mids2, jobs2 = await _jobs_of(info["postgres_dsn"], addresses)
    solo_mids2, solo_jobs2 = await _jobs_of(info["postgres_dsn"], [f"solo@{unique_domain}"])
    assert len(mids2) == 3 and len(jobs2) == 1 and len(solo_jobs2) == 1, (mids2, jobs2)
    assert answers[0]["job_id"] == jobs2[0] and solo["job_id"] == solo_jobs2[0]
    assert sorted(u["id"] for u in answers[0]["users"]) == sorted(mids2)
    assert solo["id"] == solo_mids2[0]
    if point == "idempotency_job":
        assert jobs2 == jobs and solo_jobs2 == solo_jobs  # the first attempt's job
    assert (await wait_job(api, answers[0]["job_id"], timeout=60))["status"] == "completed"
    assert (await wait_job(api, solo["job_id"], timeout=60))["status"] == "completed"
    # The key still guards its request: another body under it is refused.
    status, body = await api.post("/v1/email-users", {**single, "username": "other"},
                                  headers={"Idempotency-Key": key_single})
    assert status == 422, body


async def test_external_sigkill_while_a_keyed_bulk_runs(sandbox: Any, api: Any,
                                                        unique_domain: str) -> None:
    """No fault injection: SIGKILL from outside once the key is taken (its row is seen)
    and before the answer (200 passwords are being hashed), then retry."""
    info = sandbox.info
    await ready_domain(api, unique_domain)
    users = [{"username": f"x{n:03d}"} for n in range(200)]
    addresses = sorted(f"x{n:03d}@{unique_domain}" for n in range(200))
    body = {"domain": unique_domain, "users": users}
    key = secrets.token_hex(12)
    conn = await asyncpg.connect(info["postgres_dsn"])
    sandbox.stop_service("daemon")
    try:
        proc = _spawn_daemon(info)
        try:
            await _wait_healthy(info["api_url"], proc)
            request = asyncio.create_task(api.post("/v1/email-users/bulk", body,
                                                   headers={"Idempotency-Key": key}))
            deadline = time.monotonic() + 20
            # Stored under the calling token's id: "<token id>/<key>".
            while await conn.fetchval("SELECT status FROM idempotency_keys WHERE key LIKE $1",
                                      f"%/{key}") is None:
                assert time.monotonic() < deadline and not request.done(), "no claim"
                await asyncio.sleep(0.002)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            with contextlib.suppress(aiohttp.ClientError):
                await request
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # The kill landed between the claim and the answer.
        assert await conn.fetchval("SELECT status FROM idempotency_keys WHERE key LIKE $1",
                                   f"%/{key}") == 0
    finally:
        await conn.close()
        sandbox.start_service("daemon")
    status, first = await api.post("/v1/email-users/bulk", body,
                                   headers={"Idempotency-Key": key})
    assert status == 202, first
    status, again = await api.post("/v1/email-users/bulk", body,
                                   headers={"Idempotency-Key": key})
    assert status == 202 and again == first
    mids, jobs = await _jobs_of(info["postgres_dsn"], addresses)
    assert len(mids) == 200 and jobs == [first["job_id"]], (len(mids), jobs)
    assert sorted(u["email"] for u in first["users"]) == addresses
    assert (await wait_job(api, first["job_id"], timeout=60))["status"] == "completed"


def _request_hash(method: str, path: str, body: dict[str, Any]) -> bytes:
    # As api/idempotency.py idempotent computes it.
    return hashlib.sha256(f"{method} {path}\n".encode()
                          + json.dumps(body, sort_keys=True).encode()).digest()


async def test_claims_of_live_dead_and_foreign_requests(sandbox: Any, api: Any,
                                                        unique_domain: str) -> None:
    """A key held by a live request answers 409 (as before); one held by a dead process
    of this host is taken over at once; one held on another host waits for its lease."""
    from mailforge.claimant import claimant_id

    await ready_domain(api, unique_domain)
    info = sandbox.info
    conn = await asyncpg.connect(info["postgres_dsn"])
    try:
        acct = await conn.fetchval("SELECT account_id FROM api_tokens WHERE id = $1",
                                   info["admin_token_id"])
        node = claimant_id().split(":")[0]
        cases = [  # (claimant, lease seconds from now, expected status)
            (claimant_id(), 60, 409),                 # this test process: alive
            (claimant_id(), -1, 202),                 # alive, but stopped renewing
            (f"{node}:{2 ** 22 + 17}:1", 60, 202),    # a pid that does not run: dead
            (f"{node}:{os.getpid()}:0", 60, 202),     # our pid, another start: restarted
            ("elsewhere:1:1", 60, 409),               # another host, lease running
            ("elsewhere:1:1", -1, 202),               # another host, lease over
            (None, 60, 202),                          # let go by a failed attempt
        ]
        for n, (claimant, lease, expected) in enumerate(cases):
            body = {"domain": unique_domain, "username": f"claim{n}"}
            key = secrets.token_hex(8)
            stored = f"{info['admin_token_id']}/{key}"  # keys are the calling token's own
            await conn.execute(
                "INSERT INTO idempotency_keys (account_id, key, request_hash, status, "
                "claimant, lease_until) VALUES ($1, $2, $3, 0, $4, "
                "now() + make_interval(secs => $5))", acct, stored,
                _request_hash("POST", "/v1/email-users", body), claimant, float(lease))
            status, answer = await api.post("/v1/email-users", body,
                                            headers={"Idempotency-Key": key})
            assert status == expected, (claimant, lease, answer)
            if expected == 409:
                assert answer["error"]["code"] == "idempotency_key_in_use"
                continue
            # Taken over with no job recorded: the request ran once, and now replays.
            again = await api.post("/v1/email-users", body, headers={"Idempotency-Key": key})
            assert again == (202, answer), (again, answer)
            row = await conn.fetchrow("SELECT status, claimant, job_id FROM idempotency_keys"
                                      " WHERE account_id = $1 AND key = $2", acct, stored)
            assert row["status"] == 202 and row["claimant"] is None
            assert row["job_id"] == answer["job_id"]
    finally:
        await conn.close()


# ------------------------------------------------------------------ fuzz: 2,000 bodies

# Columns the reconcile engine (not a request) changes, and the authentication's
# last-use stamp: left out of the store fingerprint.
_VOLATILE = ["observed_generation", "status", "last_error", "updated_at", "attempts",
             "next_attempt_at", "lease_owner", "lease_until", "last_used_at",
             "deleted_at", "purge_after", "progress", "message", "done", "failed",
             "completed_at", "result", "state", "error", "secrets_expire_at",
             "sealed_secrets", "dns_report", "dns_checked_at", "dns_revisit_at",
             "dns_force"]
_TABLES = ["accounts", "api_tokens", "domains", "mailboxes", "aliases", "jobs", "job_items",
           "idempotency_keys", "webhooks", "mail_warmup", "audit_log"]


class Fingerprint:
    """What a refused request must leave unchanged: the tenant tables (engine-owned
    columns aside), Postfix's and Dovecot's databases."""

    def __init__(self, conn: asyncpg.Connection[Any], layout: Layout) -> None:
        self.conn = conn
        self.layout = layout

    async def take(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for table in _TABLES:
            out[table] = str(await self.conn.fetchval(
                f"SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
                f"FROM (SELECT to_jsonb(t) - $1::text[] AS r FROM {table} t) s", _VOLATILE))
        for label, path in (("maps.sqlite", self.layout.postfix_db),
                            ("auth.sqlite", self.layout.auth_db)):
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                rows = []
                for (table,) in db.execute("SELECT name FROM sqlite_master WHERE "
                                           "type='table' ORDER BY name"):
                    rows += [repr(r) for r in db.execute(f'SELECT * FROM "{table}"')]
            out[label] = hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()
        return out

    async def quiet(self, timeout: float = 30.0) -> None:
        """Wait until the engine has nothing left to converge (or gave up on it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = await self.conn.fetchval(
                "SELECT (SELECT count(*) FROM domains WHERE observed_generation < generation"
                " AND status <> 'failed' AND attempts < 3) + (SELECT count(*) FROM mailboxes"
                " WHERE observed_generation < generation AND status <> 'failed') + "
                "(SELECT count(*) FROM aliases WHERE observed_generation < generation)")
            if not pending:
                await asyncio.sleep(0.2)
                return
            await asyncio.sleep(0.1)


HOSTILE_TEXT = st.sampled_from([
    "", " ", "\0", "a\0b", "\ud800", "x\udfffy", "\n", "alice\n", "a\r\nb", "\u2028",
    "\u2029", "\u0085", "\t", "\x7f", "\u200b", "\ufeff", "a\u3002b", "a\uff0eb",
    "a\uff61b", "x" * 100_000, "é" * 5000, "%00", "../../etc/passwd", "*", "@", "a@b@c",
    "<script>", "'; DROP TABLE accounts; --", "\\", '"', "\U0001f600", "xn--", "-a-",
    ".", "..", "a..b", "a.", ".a",
])
HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT,
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.sampled_from([0, -1, 2 ** 31, 2 ** 63, 10 ** 100, 1.5, -0.0, 1e308]),
    st.booleans(), st.none(),
    st.lists(HOSTILE_TEXT, max_size=3),
    st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, max_size=2),
    st.recursive(st.integers(0, 3), lambda c: st.lists(c, max_size=2)
                 | st.dictionaries(st.sampled_from(["a", "b"]), c, max_size=2),
                 max_leaves=40),
)


@dataclasses.dataclass
class Target:
    method: str
    path: str
    skeleton: dict[str, Any]


def _skeletons(doc: dict[str, Any], ctx: dict[str, str]) -> list[Target]:
    """A valid-looking body for every write endpoint with a body, from the document's
    schema, with the fuzz account's own objects in fields and path ids."""
    fields: dict[str, Any] = {
        "domain": ctx["domain"], "domains": [f"n{secrets.token_hex(4)}.test"],
        "username": "fz", "name": "Fuzz", "password": "correct horse battery staple",
        "quota_mb": 100, "users": [{"username": "fz1"}], "ids": [ctx["mailbox"]],
        "targets": [f"t@{ctx['domain']}"], "target": ctx["domain"],
        "permissions": ["read"], "url": "https://hooks.example.com/x",
        "events": ["message.received"], "to": ["x@example.com"], "subject": "s",
        "body": "b", "daily_send_limit": 10, "email": "fz@customers.example",
        "domain_limit": 1, "email_user_limit": 1, "count": 2, "status": "active",
        "signature": "sig", "warmup": {"start_limit": 5, "days": 3},
    }
    ids = {"/v1/email-users/{id}": ctx["mailbox"], "/v1/aliases/{id}": ctx["alias"],
           "/v1/reseller/accounts/{id}": ctx["account"]}
    out = []
    for method, path, op in _operations(doc):
        if method == "GET" or "requestBody" not in op:
            continue
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:  # a model of components/schemas (api/openapi_gen.py)
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        props = schema.get("properties", {})
        required = schema.get("required", [])
        skeleton = {k: fields.get(k, "x") for k in props if k in required or k in fields}
        fill = ids.get(path, ctx["mailbox"] if "email-users/{id}" in path else "x")
        out.append(Target(method, _fill(path, fill), skeleton))
    return out


@st.composite
def _mutation(draw: Any, targets: list[Target],
              own: list[Any]) -> tuple[Target, dict[str, Any]]:
    target = draw(st.sampled_from(targets))
    body = json.loads(json.dumps(target.skeleton))
    keys = list(body) or ["x"]
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from([*keys, "unknown_field", "__nested__"]))
        value = draw(st.sampled_from(own)) if draw(st.integers(0, 9)) < 3 \
            else draw(HOSTILE_VALUE)
        if where == "__nested__" and isinstance(body.get(keys[0]), list) and body[keys[0]]:
            item = body[keys[0]][0]
            if isinstance(item, dict) and item:
                item[draw(st.sampled_from(list(item)))] = value
                continue
        body[where] = value
    return target, body


class Fuzzer:
    """Drives the daemon and the store from hypothesis's synchronous examples on a
    private event loop."""

    def __init__(self, sandbox: Any, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.base = sandbox.info["api_url"]
        self.token = token
        self.dsn = sandbox.info["postgres_dsn"]
        self.layout = Layout(Path(sandbox.info["state_dir"]))
        self.session: aiohttp.ClientSession | None = None
        self.fp: Fingerprint | None = None
        self.sent = 0
        self.refused = 0
        self.accepted: list[tuple[str, str, int]] = []
        self.accepted_changed = 0
        self.ctx: dict[str, str] = {}
        self.per_target: dict[str, int] = {}
        self.server_errors: list[tuple[str, str, Any, int, Any]] = []
        self.leaks: list[tuple[str, str, Any, int, list[str]]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.fp = Fingerprint(await asyncpg.connect(self.dsn), self.layout)
        await self.fp.quiet()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.fp is not None:
            await self.fp.conn.close()

    async def request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        assert self.session is not None
        for _ in range(20):
            async with self.session.request(
                    method, self.base + path, data=json.dumps(body).encode(),
                    headers={"Authorization": f"Bearer {self.token}",
                             "Content-Type": "application/json"}) as resp:
                raw = await resp.read()
                try:
                    answer = json.loads(raw) if raw else None
                except ValueError:
                    return resp.status, raw[:200]
                if resp.status == 429 and isinstance(answer, dict) and \
                        answer.get("error", {}).get("code") == "rate_limited":
                    # The per-token limiter, not a refusal of this request: wait it out.
                    # (Other 429s, e.g. a daily send limit reached, are refusals.)
                    await asyncio.sleep(min(float(resp.headers.get("Retry-After", "1")), 2))
                    continue
                return resp.status, answer
        raise AssertionError("rate limited throughout")

    async def one(self, target: Target, body: dict[str, Any]) -> None:
        assert self.fp is not None
        before = await self.fp.take()
        status, answer = await self.request(target.method, target.path, body)
        self.sent += 1
        name = f"{target.method} {target.path}"
        self.per_target[name] = self.per_target.get(name, 0) + 1
        short = json.dumps(body)[:300]
        if status >= 500:
            self.server_errors.append((target.method, target.path, short, status, answer))
        if 400 <= status < 500:
            self.refused += 1
            after = await self.fp.take()
            changed = sorted(k for k in before if before[k] != after[k])
            if changed:
                self.leaks.append((target.method, target.path, short, status, changed))
        elif status < 400:
            self.accepted.append((target.method, target.path, status))
            await self.fp.quiet()
            if await self.fp.take() != before:
                self.accepted_changed += 1


FUZZ_EXAMPLES = 2400


def test_fuzz_write_endpoints_no_5xx_no_writes_on_refusal(sandbox: Any) -> None:
    import requests

    info = sandbox.info
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    r = requests.post(f"{info['api_url']}/v1/reseller/accounts", headers=admin, timeout=10,
                      json={"email": f"hostile-{secrets.token_hex(3)}@customers.example",
                            "domain_limit": 20, "email_user_limit": 200, "reseller": True})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    fuzzer = Fuzzer(sandbox, token)
    api = _SyncApi(fuzzer)
    domain = f"hz{secrets.token_hex(4)}.test"
    ctx = fuzzer.ctx = fuzzer.run(api.setup(domain))
    doc = requests.get(info["api_url"] + "/v1/openapi.json", timeout=10).json()
    targets = _skeletons(doc, ctx)
    assert len(targets) >= 15, [t.path for t in targets]
    fuzzer.run(fuzzer.open())
    try:
        # Values built from the account's own objects: its alias as its own target,
        # its names with a trailing newline or a Unicode full stop, another tenant's.
        d = ctx["domain"]
        own: list[Any] = [[f"al@{d}"], f"al@{d}", [f"keep@{d}\n"], "keep\n", d + "\n",
                          d.replace(".", "\u3002"), [d.upper() + "."], ctx["domain_id"],
                          [ctx["mailbox"], ctx["mailbox"]], [ctx["alias"]],
                          f"x@{d}\u2028", ["postmaster@" + d], [f"@{d}"]]

        @given(case=_mutation(targets, own))
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        def run(case: tuple[Target, dict[str, Any]]) -> None:
            fuzzer.run(fuzzer.one(*case))

        run()
    finally:
        fuzzer.run(fuzzer.close())
        fuzzer.loop.close()
    covered = {(m, p) for m, p, *_ in fuzzer.leaks + fuzzer.server_errors}
    print(f"fuzz: {fuzzer.sent} requests, {fuzzer.refused} refused, "
          f"{len(fuzzer.accepted)} accepted ({fuzzer.accepted_changed} seen in the "
          f"fingerprint); per endpoint: {fuzzer.per_target}; failing endpoints: "
          f"{sorted(covered)}")
    assert fuzzer.sent >= 2000
    assert fuzzer.refused >= 1500
    assert len(fuzzer.per_target) == len(targets)
    # The fingerprint sees writes: accepted requests changed it (their audit record at
    # least), so an unchanged fingerprint after a refusal means something.
    assert fuzzer.accepted_changed >= 1
    assert not fuzzer.server_errors, fuzzer.server_errors[:10]
    assert not fuzzer.leaks, fuzzer.leaks[:10]


class _SyncApi:
    """Setting up the fuzz account's objects on the fuzzer's loop."""

    def __init__(self, fuzzer: Fuzzer) -> None:
        self.f = fuzzer

    async def _call(self, session: aiohttp.ClientSession, method: str, path: str,
                    body: Any = None) -> tuple[int, Any]:
        async with session.request(method, self.f.base + path, json=body,
                                   headers={"Authorization": f"Bearer {self.f.token}"}) as r:
            return r.status, await r.json(content_type=None)

    async def setup(self, domain: str) -> dict[str, str]:
        async with aiohttp.ClientSession() as s:
            status, dom = await self._call(s, "POST", "/v1/domains/connect",
                                           {"domains": [domain]})
            assert status == 201, dom
            status, job = await self._call(s, "POST", "/v1/domains/setup", {"domain": domain})
            assert status == 202, job
            await self._wait(s, job["job_id"])
            status, user = await self._call(s, "POST", "/v1/email-users",
                                            {"domain": domain, "username": "keep"})
            assert status == 202, user
            status, alias = await self._call(s, "POST", "/v1/aliases", {
                "domain": domain, "username": "al", "targets": [f"keep@{domain}"]})
            assert status == 202, alias
            await self._wait(s, alias["job_id"])
            status, acct = await self._call(s, "POST", "/v1/reseller/accounts", {
                "email": f"sub-{secrets.token_hex(3)}@customers.example",
                "domain_limit": 1, "email_user_limit": 1})
            assert status == 201, acct
        return {"domain": domain, "domain_id": dom["domains"][0]["id"],
                "mailbox": user["id"], "alias": alias["id"], "account": acct["account_id"]}

    async def _wait(self, s: aiohttp.ClientSession, job_id: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, job = await self._call(s, "GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish")

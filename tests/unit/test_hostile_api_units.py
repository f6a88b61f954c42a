"""Issue 9 items 8 and 10, the pure parts: the request body parser (depth, NUL,
surrogates, numbers), the Idempotency-Key and claimant rules, what counts as "the
database is down", the path/query guard, the header read timeout, the document."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge import claimant, reputation
from mailforge.api import app as app_module
from mailforge.api import http, idempotency
from mailforge.api.errors import status_of
from mailforge.api.server import ApiRunner
from mailforge.errors import NotFound, ServiceError, ValidationFailed


def _refusal(raw: bytes) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        http.parse_json(raw)
    assert 400 <= status_of(info.value) < 500
    return info.value


# ------------------------------------------------------------------ JSON bodies


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{"a":' + b"[" * 33 + b"]" * 33 + b"}",
])
def test_deep_json_is_400_not_recursion(raw: bytes) -> None:
    err = _refusal(raw)
    assert any("nested more than 32 levels" in d for d in err.details) or \
        err.code == "malformed_json", err.body()


def test_depth_limit_is_exact() -> None:
    ok = b'{"a":' + b"[" * 31 + b"]" * 31 + b"}"
    assert http.parse_json(ok)["a"] is not None
    err = _refusal(b'{"a":' + b"[" * 32 + b"]" * 32 + b"}")
    assert err.details and err.details[0].startswith("a"), err.body()


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"name": "x\\ud800"}', "name"),
    (b'{"name": "\\udfff"}', "name"),
    (b'{"users": [{"username": "a\\u0000"}]}', "users[0].username"),
    (b'{"a": {"b": ["ok", "\\ud83d"]}}', "a.b[1]"),
    (b'{"na\\u0000me": 1}', "na\\x00me"),
    (b'{"a": "\xed\xa0\x80"}', "a"),  # a surrogate encoded as raw UTF-8-like bytes
])
def test_nul_and_lone_surrogates_are_named(raw: bytes, field: str) -> None:
    err = _refusal(raw)
    assert isinstance(err, ValidationFailed)
    assert any(d.startswith(f"{field}:") for d in err.details), err.details


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
                                 b'{"a": 1e999}', b'{"a": ' + b"9" * 5000 + b"}",
                                 b"\xff\xfe", b"", b"{"])
def test_bad_numbers_and_bytes_are_malformed(raw: bytes) -> None:
    assert _refusal(raw).code == "malformed_json"


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"1", b"null"])
def test_body_must_be_an_object(raw: bytes) -> None:
    assert _refusal(raw).details == ["body: must be a JSON object"]


def test_valid_text_passes_unchanged() -> None:
    body = {"name": "Zoë 😀 \u3002", "n": 10 ** 30, "f": 1.5, "l": [{"x": None}]}
    assert http.parse_json(json.dumps(body).encode()) == body


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                           allow_infinity=False)
                    | st.text(alphabet=st.characters(exclude_categories=())),
                    lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=30))
def test_any_json_is_parsed_or_refused_with_4xx(value: Any) -> None:
    raw = json.dumps({"v": value}).encode()
    try:
        out = http.parse_json(raw)
    except ServiceError as exc:
        assert 400 <= status_of(exc) < 500
        return
    # Whatever passes is storable: UTF-8 encodable, no NUL.
    text = json.dumps(out, ensure_ascii=False)
    text.encode("utf-8")
    assert "\\u0000" not in json.dumps(out)


# ------------------------------------------------------------------ keys, claimants


@pytest.mark.parametrize("key", ["a", "x" * 200, "order-42_A.b~!", "550e8400-e29b-41d4"])
def test_idempotency_key_accepted(key: str) -> None:
    assert idempotency.IDEMPOTENCY_KEY.fullmatch(key)


@pytest.mark.parametrize("key", ["", "x" * 201, "a b", "a\n", "a\t", "ключ", "a\0",
                                 "a\u2028", "a\x7f", " a"])
def test_idempotency_key_refused(key: str) -> None:
    assert not idempotency.IDEMPOTENCY_KEY.fullmatch(key)


def test_claimants() -> None:
    me = claimant.claimant_id()
    node, pid, start = me.split(":")
    assert int(pid) == os.getpid() and start.isdigit()
    assert claimant.claimant_alive(me) is True
    assert claimant.claimant_alive(f"{node}:{pid}:{int(start) + 1}") is False  # pid reused
    assert claimant.claimant_alive(f"{node}:{2 ** 22 + 17}:1") is False  # no such process
    assert claimant.claimant_alive("another-host:1:1") is None  # its lease decides
    assert claimant.claimant_alive(None) is False
    assert claimant.claimant_alive(f"{node}:x:1") is None


def test_crash_points_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(idempotency.CRASH_ENV, raising=False)
    assert idempotency.crash_points_from_env() == frozenset()
    monkeypatch.setenv(idempotency.CRASH_ENV, " idempotency_claim, idempotency_job ,")
    assert idempotency.crash_points_from_env() == {"idempotency_claim", "idempotency_job"}


# ------------------------------------------------------------------ database down


def _raised_in(module: str, exc: BaseException) -> BaseException:
    scope: dict[str, Any] = {"__name__": module}
    exec("def boom(e):\n    raise e\n", scope)  # a frame in *module*
    try:
        scope["boom"](exc)
    except BaseException as caught:
        return caught
    raise AssertionError("not raised")


def test_what_counts_as_database_down() -> None:
    assert http.is_database_down(asyncpg.exceptions.ConnectionDoesNotExistError("x"))
    assert http.is_database_down(asyncpg.exceptions.CannotConnectNowError("x"))
    assert http.is_database_down(asyncpg.exceptions.AdminShutdownError("x"))
    assert http.is_database_down(asyncpg.exceptions.TooManyConnectionsError("x"))
    assert http.is_database_down(asyncpg.InterfaceError("connection is closed"))
    assert http.is_database_down(_raised_in("asyncpg.connect_utils",
                                            ConnectionRefusedError(111, "refused")))
    assert http.is_database_down(_raised_in("asyncpg.pool", TimeoutError()))
    # A mail server or DNS provider that is down is not the database.
    assert not http.is_database_down(_raised_in("mailforge.mail.submit",
                                                ConnectionRefusedError(111, "refused")))
    assert not http.is_database_down(asyncpg.exceptions.UniqueViolationError("x"))
    assert not http.is_database_down(asyncpg.InterfaceError("another operation is in "
                                                            "progress"))
    assert not http.is_database_down(ValueError("x"))
    err = http.database_unavailable()
    assert (err.status, err.code) == (503, "database_unavailable")
    assert err.message == "The database is unreachable; retry later."
    assert int(err.headers["Retry-After"]) > 0


# ------------------------------------------------------------------ path and query


@pytest.mark.parametrize("value", ["usr_\0", "a\nb", "\u2028", "\ud800", "x\x7f",
                                   "a" * 256])
def test_bad_path_values_are_not_found(value: str) -> None:
    req = make_mocked_request("GET", "/v1/email-users/x", match_info={"id": value})
    with pytest.raises(NotFound):
        http._clean_request_parts(req)


def test_bad_query_values_are_named() -> None:
    req = make_mocked_request("GET", "/v1/email-users?search=a%00b&limit=5")
    with pytest.raises(ValidationFailed) as info:
        http._clean_request_parts(req)
    assert info.value.details == ["search: must be printable text of at most 2000 characters"]
    fine = make_mocked_request("GET", "/v1/domains/b%C3%BCcher.test?search=Zo%C3%AB",
                               match_info={"id": "bücher.test"})
    http._clean_request_parts(fine)


# ------------------------------------------------------------------ header timeout


async def test_header_read_timeout_closes_a_trickling_connection() -> None:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app.router.add_route("*", "/", hello)
    runner = ApiRunner(app, header_timeout=0.4, keepalive_timeout=60)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HT")
        await writer.drain()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.3 < time.monotonic() - started < 2
        writer.close()
        # A prompt request on a connection idle for longer than the header timeout,
        # and a slowly sent body (the body has its own timeout, in the handler).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.6)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        for ch in b"abc":
            await asyncio.sleep(0.3)
            writer.write(bytes([ch]))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.close()
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ wiring


def test_no_middleware_reads_bodies_or_queries_before_validation() -> None:
    assert not hasattr(reputation, "guard_new_mailboxes")
    from mailforge.api.audit import audit_middleware

    assert audit_middleware is not None


def test_every_operation_documents_503_except_those_without_database() -> None:
    from mailforge.api.openapi import DOC_KEY
    from mailforge.config import Config

    ctx = type("Ctx", (), {"cfg": Config()})()
    doc = app_module.make_app(ctx)[DOC_KEY]  # type: ignore[arg-type]
    assert len(doc["paths"]) > 30
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            assert "400" in op["responses"], (method, path)
            if path not in ("/v1/health", "/v1/openapi.json", "/v1/docs"):
                assert {"404", "503"} <= set(op["responses"]), (method, path)


async def test_a_running_request_keeps_renewing_its_lease() -> None:
    from mailforge.service import idempotency as rules

    renewed: list[tuple[str, str, str, float]] = []

    class Store:
        async def renew(self, account: str, key: str, me: str,
                        lease: float) -> None:
            renewed.append((account, key, me, lease))

    task = asyncio.create_task(rules.keep_lease(Store(), "acct_a", "k", "me",  # type: ignore[arg-type]
                                                0.15))
    await asyncio.sleep(0.4)
    task.cancel()
    assert len(renewed) >= 3 and renewed[0] == ("acct_a", "k", "me", 0.15)


async def test_recovered_answer_names_the_job_and_its_resource() -> None:
    from datetime import UTC, datetime

    from mailforge.models import Job, Principal

    now = datetime.now(UTC)
    job = Job("job_1", "acct_a", "domain_setup", "processing", 50, "", "dom_1", 1, 0, 0, {},
              now, now, None)
    req = make_mocked_request("POST", "/v1/domains/setup")
    principal = Principal(token_id="tok_1", account_id="acct_a",
                          permissions=frozenset({"write"}), domains=None)
    status, body = await idempotency.recover_job(req, principal, job)
    assert status == 202
    assert body == {"job_id": "job_1", "status": "pending", "recovered": True,
                    "resource_id": "dom_1", "domain_id": "dom_1"}

"""The served OpenAPI document matches the running app (every route documented, every
documented route served), the rate limiter, the audit redaction, and rendering of an
account suspension. No stack needed: the app is assembled without a database."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, cast

from mapview import maps
from test_render import domain, mailbox

from mailforge.api import app as app_mod
from mailforge.api.audit import REDACTED, redact
from mailforge.api.openapi import DOC_KEY, HTTP_METHODS
from mailforge.backends.postfix_dovecot.render import SUSPENDED_HASH, render
from mailforge.config import Config
from mailforge.models import DomainState
from mailforge.ratelimit import RateLimiter, retry_after
from mailforge.service.context import ServiceContext


def _app() -> Any:
    ctx = cast(ServiceContext, type("Ctx", (), {"cfg": Config()})())
    return app_mod.make_app(ctx)


def _served(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue  # aiohttp adds HEAD to every GET
        path = route.resource.canonical
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)  # {id:regex} -> {id}
        out.add((route.method.lower(), path))
    return out


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, item in doc["paths"].items() for m in item if m in HTTP_METHODS}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = _app()
    doc = app[DOC_KEY]
    served, documented = _served(app), _documented(doc)
    assert served, "no routes found"
    undocumented = sorted(served - documented)
    by_module = {}
    for route in app.router.routes():
        by_module[(route.method.lower(), route.resource.canonical)] = route.handler.__module__
    assert not undocumented, "routes not declared with @operation: " + ", ".join(
        f"{m.upper()} {p} ({by_module.get((m, p), '?')})" for m, p in undocumented)
    assert not sorted(documented - served), "documented but not served"


def test_document_is_well_formed_openapi_31() -> None:
    doc = _app()[DOC_KEY]
    assert doc["openapi"].startswith("3.1")
    op_ids = []
    for path, item in doc["paths"].items():
        params_in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            assert op.get("summary"), f"{where}: summary"
            op_ids.append(op.get("operationId"))
            assert op["responses"], f"{where}: responses"
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
            declared |= {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
            assert declared == params_in_path, f"{where}: path parameters {declared}"
            for status, resp in op["responses"].items():
                if status.startswith("4"):
                    schema = resp["content"]["application/json"]["schema"]
                    assert "error" in schema.get("properties", {}) or "$ref" in schema, \
                        f"{where} {status}: not the error envelope"
            if op.get("security") != []:
                assert "401" in op["responses"], f"{where}: authenticated but no 401"
    assert None not in op_ids and len(op_ids) == len(set(op_ids)), "operationIds unique"


def test_redaction_removes_secret_fields_everywhere() -> None:
    body = {"username": "a", "password": "p1", "users": [{"username": "b",
                                                          "password": "p2"}] * 30,
            "cloudflare_api_token": "cf", "dkim_private_key": "k", "name": "x" * 500}
    out = redact(body)
    text = repr(out)
    assert "p1" not in text and "p2" not in text and "'cf'" not in text
    assert out["password"] == REDACTED and out["cloudflare_api_token"] == REDACTED
    assert out["dkim_private_key"] == REDACTED
    assert len(out["users"]) == 21 and out["users"][-1].startswith("[… 10 more")
    assert len(out["name"]) <= 201


def test_token_bucket_limits_and_refills() -> None:
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [rl.take("t") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.take("t")
    assert wait == 0.5 and retry_after(wait) == "1"
    assert rl.take("other") == 0.0  # buckets are per key
    now[0] += 0.5
    assert rl.take("t") == 0.0
    assert rl.take("t") > 0


def test_token_bucket_memory_is_bounded() -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_keys=10)
    for i in range(100):
        rl.take(f"k{i}")
    assert len(rl._buckets) == 10


def test_account_suspension_renders_nologin_for_every_mailbox() -> None:
    st = DomainState(domain(), (mailbox("a"), mailbox("b")))
    assert all(u.login_allowed for u in render(st).users)
    suspended = replace(st, account_suspended=True)
    files = maps(suspended)
    assert [u.login_allowed for u in files.users] == [False, False]
    # The password stops verifying too (SMTP AUTH through Dovecot SASL ignores nologin),
    # while the store keeps the real hash for unsuspend.
    assert {u.password for u in files.users} == {SUSPENDED_HASH}
    assert all(u.password != SUSPENDED_HASH for u in render(st).users)
    # Delivery is unchanged: the mailboxes stay in the Postfix maps.
    assert files.mailboxes == maps(st).mailboxes


def test_every_operation_and_field_is_described_with_an_example() -> None:
    """Generated from the models: a tag, a summary and a description per operation, a
    description and an example per field of every component, an example per body; the
    document is valid OpenAPI 3.1."""
    from openapi_spec_validator import validate as validate_openapi

    doc = _app()[DOC_KEY]
    validate_openapi(doc)
    problems = []
    tags = {t["name"] for t in doc["tags"]}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            if len(op.get("tags", [])) != 1 or op["tags"][0] not in tags:
                problems.append(f"{where}: tag")
            if not (op.get("summary") and op.get("description")):
                problems.append(f"{where}: summary or description")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "example" not in body:
                problems.append(f"{where}: body example")
            for p in op.get("parameters", []):
                if "$ref" not in p and not p.get("description"):
                    problems.append(f"{where}: parameter {p['name']} description")
    for name, schema in doc["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            if not prop.get("description"):
                problems.append(f"{name}.{field}: description")
            if "examples" not in prop and "$ref" not in prop and "allOf" not in prop:
                problems.append(f"{name}.{field}: examples")
    assert not problems, "\n".join(problems)

"""Walks every operation of the served OpenAPI document and checks that the code serving
it validates exactly what the document says (issue 10): for each body field, the
document's type is what the code accepts (another JSON type is a 400 naming the field),
a required field left out is a 400 naming it, an unknown field is a 400 naming it, and
the operation's own example is not refused as invalid; for each query parameter, a value
outside its schema is a 400 naming it. Works inside a fresh sub-account."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.stack

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# A JSON value of another type than the schema's, per schema type.
WRONG = {"string": 12345, "integer": "not-a-number", "number": "not-a-number",
         "boolean": "yes", "array": {"not": "a list"}, "object": ["not", "an", "object"]}


@pytest.fixture(scope="module")
def walker(sandbox: Any) -> dict[str, Any]:
    info = sandbox.info
    r = requests.post(f"{info['api_url']}/v1/reseller/accounts", timeout=10,
                      headers={"Authorization": f"Bearer {info['admin_token']}"},
                      json={"email": f"walk-{secrets.token_hex(3)}@customers.example",
                            "domain_limit": 50, "email_user_limit": 200, "reseller": True})
    assert r.status_code == 201, r.text
    doc = requests.get(f"{info['api_url']}/v1/openapi.json", timeout=10).json()
    return {"base": info["api_url"], "doc": doc,
            "auth": {"Authorization": f"Bearer {r.json()['token']}"}}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    out: set[str] = set()
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        out |= _types(branch)
    if "const" in schema or "enum" in schema:
        out |= {type_name(v) for v in schema.get("enum", [schema.get("const")])}
    return out


def type_name(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number",
            list: "array", dict: "object", type(None): "null"}[type(value)]


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


def _url(base: str, path: str) -> str:
    # Ids no object has: the body is validated before anything is looked up.
    return base + path.replace("{id}", "zz_walk0000").replace("{name}", "walk.invalid")


def _details(resp: requests.Response) -> list[str]:
    try:
        return list(resp.json()["error"].get("details", []))
    except (ValueError, KeyError, TypeError):
        return []


def test_every_body_field_is_validated_as_documented(walker: dict[str, Any]) -> None:
    doc, base, auth = walker["doc"], walker["base"], walker["auth"]
    problems: list[str] = []
    walked = 0
    for method, path, op in _operations(doc):
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            continue
        schema = _resolve(doc, content["schema"])
        example = content.get("example")
        where = f"{method.upper()} {path}"
        if example is None or schema.get("type") != "object":
            problems.append(f"{where}: no example or not an object body")
            continue
        walked += 1

        def send(body: Any, method: str = method, url: str = _url(base, path)
                 ) -> requests.Response:
            return requests.request(method, url, json=body, headers=auth, timeout=30)

        r = send(example)
        if r.status_code == 400:
            problems.append(f"{where}: its own example is refused: {r.text[:300]}")
        r = send({**example, "zz_unknown": 1})
        if r.status_code != 400 or "zz_unknown: unknown field" not in _details(r):
            problems.append(f"{where}: an unknown field is not refused: {r.status_code}")
        for field in schema.get("required", []):
            r = send({k: v for k, v in example.items() if k != field})
            if r.status_code != 400 or f"{field}: is required" not in _details(r):
                problems.append(f"{where}: leaving out {field} is not refused")
        for field, prop in schema.get("properties", {}).items():
            allowed = _types(_resolve(doc, prop))
            wrong = next((v for v in WRONG.values() if type_name(v) not in allowed
                          and not (type_name(v) == "integer" and "number" in allowed)),
                         None)
            if wrong is None or not allowed:
                continue
            r = send({**example, field: wrong})
            if r.status_code != 400 or not any(d.startswith(field) for d in _details(r)):
                problems.append(f"{where}: {field}={wrong!r} (document: {sorted(allowed)}) "
                                f"is not refused naming it: {r.status_code} {r.text[:200]}")
    assert walked >= 1
    assert not problems, "\n".join(problems)


def test_every_query_parameter_is_validated_as_documented(walker: dict[str, Any]) -> None:
    doc, base, auth = walker["doc"], walker["base"], walker["auth"]
    problems: list[str] = []
    for method, path, op in _operations(doc):
        for param in op.get("parameters", []):
            if "$ref" in param or param.get("in") != "query":
                continue
            schema = _resolve(doc, param.get("schema", {}))
            types = _types(schema)
            if "integer" in types:
                bad = "not-a-number"
            elif "enum" in schema:
                bad = "zz-none-of-these"
            elif "maxLength" in schema:
                bad = "x" * (schema["maxLength"] + 1)
            else:
                continue
            r = requests.request(method, _url(base, path), params={param["name"]: bad},
                                 headers=auth, timeout=30)
            name = param["name"]
            if r.status_code != 400 or not any(d.startswith(name) for d in _details(r)):
                problems.append(f"{method.upper()} {path}: {name}={bad[:20]!r} is not refused "
                                f"naming it: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)

"""The typed-operation framework (api/operation.py, schema/base.py, api/openapi_gen.py):
what a declared operation validates is what its generated document says, errors name
each field in the API's words, and configuration-bound limits reach both. No database:
the operation under test needs no authentication."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Annotated, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate as validate_openapi
from pydantic import ConfigDict, Field

from mailforge.api.context import CTX
from mailforge.api.http import envelope_middleware
from mailforge.api.openapi import build_document
from mailforge.api.operation import body_of, operation, query_of, reply
from mailforge.config import Config
from mailforge.schema.base import Body, Chars, Items, Reply
from mailforge.schema.common import Page

routes = web.RouteTableDef()


class Thing(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "a", "size": 3}]})
    name: Annotated[str, Field(max_length=20, description="Its name.", examples=["a"])]
    size: Annotated[int, Field(ge=1, le=10, description="Its size.", examples=[3])] = 1


class NewThings(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"things": [{"name": "a"}], "secret": "correct horse"}]})
    things: Annotated[list[Thing], Items("limits.bulk_max_items", noun="things"),
                      Field(description="The things.", examples=[[{"name": "a"}]])]
    secret: Annotated[str, Chars("passwords.min_length", 256),
                      Field(description="A secret.", examples=["correct horse"])]


class Made(Reply):
    """What was made."""

    count: Annotated[int, Field(description="How many.", examples=[1])]
    limit: Annotated[int, Field(description="The page size asked for.", examples=[50])]


@operation(routes, "POST", "/v1/things", id="makeThings", tag="meta", summary="Make things",
           description="A test operation.", permission=None, query=Page, body=NewThings,
           answers={201: Made})
async def make(request: web.Request) -> web.StreamResponse:
    body = body_of(request, NewThings)
    page = query_of(request, Page)
    return reply(Made(count=len(body.things), limit=page.limit), status=201)


def _cfg() -> Config:
    cfg = Config()
    return replace(cfg, limits=replace(cfg.limits, bulk_max_items=3),
                   passwords=replace(cfg.passwords, min_length=12))


def _app() -> web.Application:
    app = web.Application(middlewares=[envelope_middleware])
    app[CTX] = SimpleNamespace(cfg=_cfg())  # type: ignore[assignment]
    app.router.add_routes(routes)
    return app


async def _post(body: Any, query: str = "") -> tuple[int, Any]:
    async with TestClient(TestServer(_app())) as client:
        resp = await client.post(f"/v1/things{query}", json=body)
        return resp.status, await resp.json()


GOOD = {"things": [{"name": "a"}, {"name": "b", "size": 10}], "secret": "x" * 12}


async def test_a_valid_request_reaches_the_handler_typed() -> None:
    assert await _post(GOOD, "?limit=7") == (201, {"count": 2, "limit": 7})


@pytest.mark.parametrize(("body", "query", "detail"), [
    ({**GOOD, "zz": 1}, "", "zz: unknown field"),
    ({"secret": "x" * 12}, "", "things: is required"),
    ({**GOOD, "things": [{"name": "a"}, {"name": "b", "size": 11}]}, "",
     "things[1].size: must be at most 10"),
    ({**GOOD, "things": [{"name": "a", "size": "5"}]}, "", "things[0].size: must be an "
                                                            "integer"),
    ({**GOOD, "things": [{"name": "a", "size": True}]}, "", "things[0].size: must be an "
                                                             "integer"),
    ({**GOOD, "things": [{"name": "a"}] * 4}, "", "things: must be a list of 1 to 3 things "
                                                  "(got 4)"),
    ({**GOOD, "things": []}, "", "things: must be a list of 1 to 3 things (got 0)"),
    ({**GOOD, "secret": "x" * 11}, "", "secret: must be at least 12 characters"),
    (GOOD, "?limit=0", "limit: must be at least 1"),
    (GOOD, "?limit=ten", "limit: must be an integer"),
])
async def test_each_bad_field_is_named(body: Any, query: str, detail: str) -> None:
    status, answer = await _post(body, query)
    assert status == 400, answer
    assert detail in answer["error"]["details"], answer


async def test_every_bad_field_is_reported_at_once_and_no_value_echoed() -> None:
    status, answer = await _post({"things": [{"name": "n" * 21, "size": 0}, {}],
                                  "secret": "hunter2-short"[:5], "zz": 1})
    assert status == 400
    fields = sorted(d.split(":")[0] for d in answer["error"]["details"])
    assert fields == ["secret", "things[0].name", "things[0].size", "things[1].name", "zz"]
    assert "hunte" not in str(answer)


def test_the_document_says_what_is_validated() -> None:
    app = _app()
    doc = build_document(app, _cfg())
    validate_openapi(doc)
    op = doc["paths"]["/v1/things"]["post"]
    assert op["tags"] == ["meta"] and op["description"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewThings"}
    assert op["requestBody"]["content"]["application/json"]["example"]
    schemas = doc["components"]["schemas"]
    things = schemas["NewThings"]["properties"]["things"]
    # The configured bounds, not the defaults: 3 items, 12 characters.
    assert (things["minItems"], things["maxItems"]) == (1, 3)
    assert schemas["NewThings"]["properties"]["secret"]["minLength"] == 12
    assert schemas["NewThings"]["additionalProperties"] is False
    assert schemas["Thing"]["properties"]["size"]["maximum"] == 10
    params = {p.get("name"): p for p in op["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 500 and params["limit"]["description"]
    assert "x-mailforge-setting" not in str(doc)
    for name in ("NewThings", "Thing", "Made"):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description") and prop.get("examples"), (name, field)
    assert set(op["responses"]) >= {"201", "400", "408", "413", "415"}

"""The mail slice's operations in the generated OpenAPI document (issue 10, item 1): each
is tagged and described, each field of its models has a description and an example, the
models' own examples pass their validation, and the document is valid OpenAPI 3.1. No
database: the app is assembled without one."""

from __future__ import annotations

from typing import Any, cast

import pytest
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel

from mailforge.api import app as app_mod
from mailforge.api.openapi import DOC_KEY, HTTP_METHODS
from mailforge.config import Config
from mailforge.errors import ValidationFailed
from mailforge.schema import mail, webhooks
from mailforge.schema.base import Body, validate
from mailforge.service.context import ServiceContext

MAIL_OPERATIONS = {
    "sendMail", "listInbox", "getSending", "putSending", "getMessageBody",
    "listAttachments", "getAttachment", "markRead", "markUnread", "getDomainReputation",
    "createWebhook", "listWebhooks", "deleteWebhook", "listWebhookDeliveries"}


def _doc() -> dict[str, Any]:
    ctx = cast(ServiceContext, type("Ctx", (), {"cfg": Config()})())
    return dict(app_mod.make_app(ctx)[DOC_KEY])


def _operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for item in doc["paths"].values()
            for method, op in item.items() if method in HTTP_METHODS}


def test_every_mail_operation_is_generated_tagged_and_described() -> None:
    doc = _doc()
    validate_openapi(doc)
    ops = _operations(doc)
    assert MAIL_OPERATIONS <= set(ops)
    for name in MAIL_OPERATIONS:
        op = ops[name]
        assert op["tags"] and op["summary"] and op["description"], name
        for p in op.get("parameters", []):
            assert p.get("description"), (name, p["name"])
        for status, answer in op["responses"].items():
            assert answer["description"], (name, status)
    # The paging fields every list answers.
    schemas = doc["components"]["schemas"]
    for lst in ("Messages", "Webhooks", "Deliveries"):
        assert {"total", "limit", "offset", "next_cursor"} <= set(schemas[lst]["properties"])
    send = ops["sendMail"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SendMessage"}
    assert "Idempotency-Key" in [p["name"] for p in send["parameters"]]
    assert "content" not in ops["deleteWebhook"]["responses"]["204"]


def _models() -> list[type[BaseModel]]:
    out = []
    for module in (mail, webhooks):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and \
                    value.__module__ == module.__name__:
                out.append(value)
    return out


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_field_has_a_description_and_an_example(model: type[BaseModel]) -> None:
    schema = model.model_json_schema(mode="validation" if issubclass(model, Body)
                                     else "serialization")
    for field, prop in schema.get("properties", {}).items():
        assert prop.get("description"), (model.__name__, field)
        assert "examples" in prop, (model.__name__, field)


@pytest.mark.parametrize("model", [m for m in _models() if issubclass(m, Body)],
                         ids=lambda m: m.__name__)
def test_request_examples_are_valid_requests(model: type[Body]) -> None:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict) and extra.get("examples"), model.__name__
    for example in cast(list[Any], extra["examples"]):
        validate(model, example, Config())


def test_send_example_is_the_seed_reply() -> None:
    extra = mail.SendMessage.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    req = validate(mail.SendMessage, cast(list[Any], extra["examples"])[0],
                   Config()).to_request()
    assert req.to == ("jordan@company.test",) and req.in_reply_to == "<reply-xyz@company.test>"
    with pytest.raises(ValidationFailed) as err:
        validate(mail.SendMessage, {"to": "a@b.test", "attachments": [{}] * 21}, Config())
    assert err.value.details == ["attachments: must hold at most 20 items"]

"""Generates the OpenAPI 3.1 operations of the routes declared with
``api/operation.py`` from their models: components with ``$ref``, parameters from the
query models, bodies and answers from the body and answer models, descriptions and
examples from the models' fields, the error answers each operation can give, and the
bounds that come from the configuration resolved against the running one."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ..schema.base import SETTING_MARK, setting
from ..schema.errors import Error
from .operation import Operation, Raw, operation_of

REF = "#/components/schemas/{model}"

# The sections of the reference, in order (every operation names one).
TAGS: list[dict[str, str]] = [
    {"name": "domains", "description": "Connect domains, set them up, read their state."},
    {"name": "dns", "description": "The DNS records mailforge publishes, DKIM keys and "
                                   "their rotation, delegation checks."},
    {"name": "email-users", "description": "Mailboxes: create (one or in bulk), list, "
                                           "update, suspend, delete and restore."},
    {"name": "aliases", "description": "Aliases, catch-alls and alias domains."},
    {"name": "mail", "description": "Send and read mail as a mailbox: inbox, threads, "
                                    "sending limits, webhooks."},
    {"name": "jobs", "description": "The truth about the progress of every long "
                                    "operation."},
    {"name": "tokens", "description": "API tokens: create, list, revoke."},
    {"name": "accounts", "description": "Reseller sub-accounts and their limits."},
    {"name": "audit", "description": "The append-only audit log."},
    {"name": "health", "description": "Liveness."},
    {"name": "meta", "description": "This document and the reference page."},
]

PARAMETERS: dict[str, Any] = {
    "ActingAccount": {
        "name": "X-Mailforge-Account", "in": "header", "required": False,
        "description": "A parent account's unrestricted admin token acts for this "
                       "sub-account (its id, acct_...).",
        "schema": {"type": "string"}, "example": "acct_01hzy3k8q6"},
    "IdempotencyKey": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Retrying with the same key and body returns the first answer "
                       "(also after a crash); another body with the key is a 422.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                   "pattern": "^[\\x21-\\x7e]+$"},
        "example": "create-jordan-2026-12-02"},
}

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


_ERROR_TEXT = {
    400: "Malformed or invalid input; details name each field.",
    401: "Missing or invalid bearer token.",
    403: "The token lacks the permission, or the account is suspended.",
    404: "No such resource (or one of another tenant).",
    408: "The request body was not received in time.",
    409: "Conflict with the current state.",
    413: "The request body is too large.",
    415: "The body is not application/json.",
    422: "Semantically impossible.",
    429: "Rate limited; see Retry-After.",
    502: "A remote server refused for good.",
    503: "A dependency is down (database_unavailable: PostgreSQL); retry after "
         "Retry-After.",
}


def _error(status: int) -> dict[str, Any]:
    return {"description": _ERROR_TEXT.get(status, "Error."),
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}


# Routes answering without the database (health reports it down with its own 503).
NO_DATABASE = frozenset({"/v1/health", "/v1/openapi.json", "/v1/docs"})


def _errors(op: Operation) -> list[int]:
    out = {400}
    if op.path not in NO_DATABASE:
        # A path id no object has, and the database down, for every route needing it.
        out |= {404, 503}
    if op.permission is not None:
        out |= {401, 403, 404, 429, 503}
    if op.body is not None:
        out |= {408, 413, 415}
    if op.idempotent:
        out |= {409, 422}
    out |= set(op.errors)
    return sorted(out)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        description = prop.pop("description", "")
        examples = prop.pop("examples", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "description": description, "schema": prop}
        if examples:
            param["example"] = examples[0]
        out.append(param)
    return out


def _example(model: type[BaseModel]) -> Any:
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if isinstance(examples, list) and examples else None


def add_operations(app: web.Application, paths: dict[str, dict[str, Any]],
                   schemas: dict[str, Any]) -> None:
    """Add every declared operation of *app* to *paths*, its models to *schemas*."""
    ops: list[Operation] = []
    for route in app.router.routes():
        op = operation_of(route.handler)
        if op is not None and route.method == op.method:
            ops.append(op)
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for op in ops:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(m, "serialization") for m in op.answers.values()
                   if not isinstance(m, Raw)]
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    schemas.update(top.get("$defs", {}))
    for op in ops:
        path = _PATH_PARAM.sub(r"{\1}", op.path)
        item = paths.setdefault(path, {})
        method = op.method.lower()
        if method in item:
            raise RuntimeError(f"OpenAPI: {op.method} {path} declared twice")
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "description": op.path_params.get(name, "The object's id."),
             "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(op.path)]
        if op.query is not None:
            params += _query_parameters(op.query)
        # Header parameters written out in full (not as $ref): every reader of the
        # document (the reference page, the surface tests) finds name and in on each.
        if op.permission is not None:
            params.append(dict(PARAMETERS["ActingAccount"]))
        if op.idempotent:
            params.append(dict(PARAMETERS["IdempotencyKey"]))
        out: dict[str, Any] = {"operationId": op.id, "tags": [op.tag],
                               "summary": op.summary, "description": op.description}
        if op.permission is None:
            out["security"] = []
        else:
            out["x-permission"] = op.permission
        if params:
            out["parameters"] = params
        if op.body is not None:
            content: dict[str, Any] = {"schema": refs[(op.body, "validation")]}
            example = _example(op.body)
            if example is not None:
                content["example"] = example
            out["requestBody"] = {"required": True,
                                  "content": {"application/json": content}}
        responses: dict[str, Any] = {}
        for status, model in op.answers.items():
            if isinstance(model, Raw):
                responses[str(status)] = {"description": model.description}
                if status == 204 or not model.media_type:
                    continue  # No Content: no body to describe
                if model.media_type != "application/json":
                    responses[str(status)]["content"] = {
                        model.media_type: {"schema": {"type": "string"}}}
                else:
                    responses[str(status)]["content"] = {
                        model.media_type: {"schema": {"type": "object"}}}
                continue
            content = {"schema": refs[(model, "serialization")]}
            example = _example(model)
            if example is not None:
                content["example"] = example
            responses[str(status)] = {"description": (model.__doc__ or "").strip()
                                      .split("\n\n")[0] or "The answer.",
                                      "content": {"application/json": content}}
        for status in _errors(op):
            responses.setdefault(str(status), _error(status))
        out["responses"] = responses
        item[method] = out


def resolve_settings(node: Any, cfg: Any) -> None:
    """Replace each configuration-bound keyword's marker with the configured value."""
    if isinstance(node, dict):
        mark = node.pop(SETTING_MARK, None)
        if isinstance(mark, dict):
            for keyword, path in mark.items():
                node[keyword] = setting(cfg, path)
        for value in node.values():
            resolve_settings(value, cfg)
    elif isinstance(node, list):
        for value in node:
            resolve_settings(value, cfg)


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)


def prune_schemas(doc: dict[str, Any]) -> None:
    """Drop the components nothing refers to (pydantic also emits definitions of types
    whose schema a field overrides)."""
    schemas = doc["components"]["schemas"]
    seen: set[str] = set()
    _refs(doc["paths"], seen)
    todo = list(seen)
    while todo:
        found: set[str] = set()
        _refs(schemas.get(todo.pop(), {}), found)
        todo += [n for n in found - seen]
        seen |= found
    for name in list(schemas):
        if name not in seen:
            del schemas[name]

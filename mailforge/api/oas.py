"""Building blocks for the OpenAPI declarations kept next to each module's routes
(``openapi_paths``): the error envelope, common parameters and response helpers.

Any api module may use them; ``openapi.py`` assembles the served document.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}

_ERROR_TEXT = {
    400: "Malformed or invalid input; details name each field.",
    401: "Missing or invalid bearer token.",
    403: "The token lacks the permission, or the account is suspended.",
    404: "No such resource (or one of another tenant).",
    405: "Method not allowed.",
    408: "The request body was not received in time.",
    409: "Conflict with the current state.",
    413: "The request body is too large.",
    415: "The body is not application/json.",
    422: "Semantically impossible.",
    429: "Rate limited; see Retry-After.",
    503: "The database is unreachable (code database_unavailable); retry after Retry-After.",
}

# Answers any authenticated endpoint can give whatever it does.
COMMON_ERRORS = (400, 401, 403, 404, 429)
WRITE_ERRORS = (*COMMON_ERRORS, 408, 409, 413, 415, 422)
# Answers every endpoint that needs the database can give (openapi.build_document adds
# them to each authenticated operation): a refused path id or query value, and 503.
ANY_ERRORS = (400, 404, 503)


def error(status: int) -> dict[str, Any]:
    return {"description": _ERROR_TEXT.get(status, "Error."),
            "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def responses(success: dict[str, dict[str, Any]],
              errors: tuple[int, ...] = COMMON_ERRORS) -> dict[str, Any]:
    out: dict[str, Any] = dict(success)
    for status in errors:
        out.setdefault(str(status), error(status))
    return out


def body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def obj(properties: dict[str, Any], required: tuple[str, ...] = (),
        closed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


PATH_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
LIMIT = {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
OFFSET = {"name": "offset", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 0, "maximum": 10_000_000}}
ACTING = {"name": "X-Mailforge-Account", "in": "header", "required": False,
          "description": "A parent's admin token acts for this sub-account.",
          "schema": {"type": "string"}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_STR = {"type": ["string", "null"]}

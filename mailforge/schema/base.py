"""Conventions of every API model, and the translation of validation errors.

- ``Body``: a JSON request body. Unknown fields are refused, types are strict (no "5"
  for 5, no 1.0 for 1, no 0 for false), every field has a description and an example,
  and the model has a whole example (``model_config`` ``json_schema_extra``).
- ``Query``: query-string parameters (text by nature, so numbers are parsed); unknown
  parameters are ignored, as HTTP clients add their own.
- ``Reply``: an answer. It documents the shape; hot paths may render plain dicts that the
  conformance tests hold to it.
- ``Items``/``Chars``: a bound that comes from the configuration (``limits.
  bulk_max_items``, ``passwords.min_length``): checked against the running configuration
  (passed as the validation context) and written into the served schema from it.

Errors come out as one detail per field, the field's path first
(``users[7].username: ...``), in the words the API always used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ..errors import ValidationFailed

# The marker a configuration-bound keyword carries in the generated schema until the
# document is built against the running configuration (api/openapi.py resolves it).
SETTING_MARK = "x-mailforge-setting"

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False, frozen=True)


class Reply(BaseModel):
    model_config = ConfigDict(frozen=True)


def setting(cfg: Any, path: str) -> int:
    """The integer configuration value at a dotted *path* (``limits.bulk_max_items``)."""
    value = functools.reduce(lambda obj, name: getattr(obj, name), path.split("."), cfg)
    assert isinstance(value, int)
    return value


def _context_cfg(info: core_schema.ValidationInfo) -> Any:
    ctx = info.context
    if not isinstance(ctx, dict) or "cfg" not in ctx:
        # Every validation of a request passes the configuration; a model validated
        # without it would silently skip a limit, so refuse loudly instead.
        raise RuntimeError("validation needs context={'cfg': Config}")
    return ctx["cfg"]


@dataclass(frozen=True)
class Items:
    """A list of *low* to the configured *high* (a setting path) items; *noun* names
    them in the message: ``must be a list of 1 to 500 users (got 501)``."""

    high: str
    low: int = 1
    noun: str = "items"

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def check(value: Any, nxt: core_schema.ValidatorFunctionWrapHandler,
                  info: core_schema.ValidationInfo) -> Any:
            if isinstance(value, list):
                most = setting(_context_cfg(info), self.high)
                if not self.low <= len(value) <= most:
                    raise ValueError(f"must be a list of {self.low} to {most} {self.noun} "
                                     f"(got {len(value)})")
            return nxt(value)

        return core_schema.with_info_wrap_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out.update({"minItems": self.low, SETTING_MARK: {"maxItems": self.high}})
        return out


@dataclass(frozen=True)
class Chars:
    """A string of at least the configured *low* (a setting path) and at most *high*
    characters."""

    low: str
    high: int

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def check(value: Any, nxt: core_schema.ValidatorFunctionWrapHandler,
                  info: core_schema.ValidationInfo) -> Any:
            if isinstance(value, str):
                least = setting(_context_cfg(info), self.low)
                if len(value) < least:
                    raise ValueError(f"must be at least {least} characters")
                if len(value) > self.high:
                    raise ValueError(f"must be at most {self.high} characters")
            return nxt(value)

        return core_schema.with_info_wrap_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out.update({"maxLength": self.high, SETTING_MARK: {"minLength": self.low}})
        return out


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "body"


def _enumerate(expected: str) -> str:
    # pydantic writes "'a', 'b' or 'c'"; the API always wrote "one of: a, b, c".
    return expected.replace("'", "").replace(" or ", ", ")


_WORDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "missing": lambda c: "is required",
    "extra_forbidden": lambda c: "unknown field",
    "string_type": lambda c: "must be a string",
    "int_type": lambda c: "must be an integer",
    "int_parsing": lambda c: "must be an integer",
    "int_from_float": lambda c: "must be an integer",
    "bool_type": lambda c: "must be true or false",
    "bool_parsing": lambda c: "must be true or false",
    "list_type": lambda c: "must be a list",
    "dict_type": lambda c: "must be an object",
    "model_type": lambda c: "must be an object",
    "model_attributes_type": lambda c: "must be an object",
    "datetime_type": lambda c: "must be an RFC 3339 date-time",
    "datetime_parsing": lambda c: "must be an RFC 3339 date-time",
    "datetime_from_date_parsing": lambda c: "must be an RFC 3339 date-time",
    "literal_error": lambda c: f"must be one of: {_enumerate(str(c.get('expected', '')))}",
    "enum": lambda c: f"must be one of: {_enumerate(str(c.get('expected', '')))}",
    "string_too_short": lambda c: f"must be at least {c['min_length']} characters",
    "string_too_long": lambda c: f"must be at most {c['max_length']} characters",
    "string_pattern_mismatch": lambda c: "has a form this field does not take",
    "too_short": lambda c: f"must hold at least {c['min_length']} items",
    "too_long": lambda c: f"must hold at most {c['max_length']} items",
    "greater_than_equal": lambda c: f"must be at least {c['ge']}",
    "greater_than": lambda c: f"must be more than {c['gt']}",
    "less_than_equal": lambda c: f"must be at most {c['le']}",
    "less_than": lambda c: f"must be less than {c['lt']}",
}


def details(exc: PydanticValidationError, prefix: str = "") -> list[str]:
    """One ``path: message`` per error, in document order (never the input value: it
    may be a password)."""
    out: list[str] = []
    for e in exc.errors(include_url=False, include_input=False):
        kind, ctx = e["type"], e.get("ctx") or {}
        if kind in ("value_error", "assertion_error"):
            text = str(ctx.get("error", e["msg"]))
        elif kind in _WORDS:
            text = _WORDS[kind](ctx)
        else:
            text = e["msg"][:1].lower() + e["msg"][1:]
        out.append(f"{prefix}{_path(tuple(e['loc']))}: {text}")
    return list(dict.fromkeys(out))  # a union's branches may say the same twice


def validate(model: type[M], data: Any, cfg: Any, prefix: str = "") -> M:
    """*data* (parsed JSON, or the query's dict) as *model*, or ``ValidationFailed``
    naming every bad field."""
    try:
        return model.model_validate(data, context={"cfg": cfg})
    except PydanticValidationError as exc:
        raise ValidationFailed(details(exc, prefix)) from None


__all__ = ["SETTING_MARK", "Body", "Chars", "Items", "Query", "Reply", "details", "setting",
           "validate"]

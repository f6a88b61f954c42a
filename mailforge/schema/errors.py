"""The error envelope every refusal has: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from .base import Reply


class ErrorBody(Reply):
    model_config = ConfigDict(extra="allow")

    code: Annotated[str, Field(pattern="^[a-z][a-z0-9_]*$",
                               description="Stable machine-readable code.",
                               examples=["invalid_request"])]
    message: Annotated[str, Field(description="What went wrong, for a person.",
                                  examples=["The request is invalid."])]
    details: Annotated[list[str] | None, Field(
        description="One entry per problem, the field's path first.",
        examples=[["users[7].username: is required"]])] = None


class Error(Reply):
    """A refused request."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "code": "invalid_request", "message": "The request is invalid.",
        "details": ["users[7].username: is required"]}}]})

    error: Annotated[ErrorBody, Field(description="The refusal.")]

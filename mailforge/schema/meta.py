"""Answers of the unauthenticated health check."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .base import Reply


class Health(Reply):
    """Liveness and database reachability."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok",
                                                               "database": "ok"}]})
    status: Annotated[Literal["ok", "degraded"], Field(
        description="ok when the daemon can serve requests; degraded when the database "
                    "is unreachable.", examples=["ok"])]
    database: Annotated[Literal["ok", "unreachable"], Field(
        description="Whether PostgreSQL answered.", examples=["ok"])]

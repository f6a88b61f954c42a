"""The HTTP face of errors: each kind of ``ServiceError`` gets its status here, and
``ApiError`` is for refusals that only exist in HTTP (415, 408, 413, an explicit
status). One function renders any of them as the error envelope."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from ..errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UpstreamRefused,
    ValidationFailed,
)


class ApiError(ServiceError):
    """A refusal with an explicit HTTP status (and headers)."""

    def __init__(self, code: str, message: str, details: Sequence[str] = (),
                 status: int = 400, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(code, message, details, extra)
        self.status = status
        self.headers = headers or {}


# Most specific first: isinstance picks the first kind that matches.
_STATUS: tuple[tuple[type[ServiceError], int], ...] = (
    (ValidationFailed, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unprocessable, 422),
    (TooManyRequests, 429),
    (UpstreamRefused, 502),
    (Unavailable, 503),
)


def status_of(err: ServiceError) -> int:
    if isinstance(err, ApiError):
        return err.status
    for kind, status in _STATUS:
        if isinstance(err, kind):
            return status
    return 400


def headers_of(err: ServiceError) -> dict[str, str]:
    out = dict(err.headers) if isinstance(err, ApiError) else {}
    if err.retry_after is not None and "Retry-After" not in out:
        out["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    if isinstance(err, TooManyRequests) and "remaining" in err.extra:
        out["X-Send-Limit-Remaining"] = str(err.extra["remaining"])
    if isinstance(err, Unauthorized):
        out.setdefault("WWW-Authenticate", "Bearer")
    return out


def error_response(err: ServiceError) -> web.Response:
    return web.Response(body=orjson.dumps(err.body()), status=status_of(err),
                        content_type="application/json", headers=headers_of(err))

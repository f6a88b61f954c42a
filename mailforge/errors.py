"""Errors, split by what happens next.

``ApiError`` and its kin become the API's error envelope. ``TemporaryError`` and
``PermanentError`` come out of backends and DNS providers and tell the reconcile
engine whether to retry later (with a delay) or to record the failure and stop,
as kopf's handler errors do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ApiError(Exception):
    """An error the API answers with ``{"error": {code, message, details}}``."""

    status = 400

    def __init__(self, code: str, message: str, details: Sequence[str] = (),
                 status: int | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        if status is not None:
            self.status = status
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        err.update(self.extra)
        return {"error": err}


class ValidationFailed(ApiError):
    status = 400

    def __init__(self, details: Sequence[str], message: str = "The request is invalid.") -> None:
        super().__init__("invalid_request", message, details)


class NotFound(ApiError):
    status = 404

    def __init__(self, what: str = "resource") -> None:
        super().__init__("not_found", f"No such {what}.")


class Conflict(ApiError):
    status = 409


class Forbidden(ApiError):
    status = 403


class ReconcileError(Exception):
    """Base of errors raised while converging a backend or DNS provider."""


class TemporaryError(ReconcileError):
    """Try again later; *delay* (seconds) overrides the engine's backoff when given."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ReconcileError):
    """Retrying will not help until the desired state or the configuration changes."""

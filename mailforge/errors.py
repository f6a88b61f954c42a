"""Errors, split by what happens next.

``ServiceError`` and its kinds are refusals of a request (the API maps each kind to an
HTTP status in ``api/errors.py``). ``TemporaryError`` and
``PermanentError`` come out of backends and DNS providers and tell the reconcile
engine whether to retry later (with a delay) or to record the failure and stop,
as kopf's handler errors do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ServiceError(Exception):
    """A refused request, said in the service's terms: a stable ``code``, a message,
    details naming each field. Its class says what kind of refusal it is; ``api/``
    maps the kind to an HTTP status (``api/errors.py``), the CLI and the MCP server to
    their own forms, so nothing below ``api/`` speaks HTTP."""

    default_code = "invalid_request"

    def __init__(self, code: str, message: str, details: Sequence[str] = (),
                 extra: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.extra = extra or {}
        # Seconds after which trying again may succeed (rate limits, a dependency down).
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        err.update(self.extra)
        return {"error": err}


class ValidationFailed(ServiceError):
    """Bad input; every detail names its field (``users[7].username: ...``)."""

    def __init__(self, details: Sequence[str], message: str = "The request is invalid.") -> None:
        super().__init__("invalid_request", message, details)


class Unauthorized(ServiceError):
    """No valid credentials."""


class Forbidden(ServiceError):
    """The caller may not do this (permission, restriction, suspension, a limit)."""


class NotFound(ServiceError):
    """No such object, or one the caller may not see (never reveal which)."""

    def __init__(self, what: str = "resource", details: Sequence[str] = (),
                 message: str | None = None) -> None:
        super().__init__("not_found", message or f"No such {what}.", details)


class Conflict(ServiceError):
    """The request contradicts the current state."""


class Unprocessable(ServiceError):
    """Well-formed but semantically impossible."""


class TooManyRequests(ServiceError):
    """A rate or quota limit; ``retry_after`` says when to try again."""


class UpstreamRefused(ServiceError):
    """A remote server (the mail server on submission) refused for good."""


class Unavailable(ServiceError):
    """A dependency is down or not configured; ``retry_after`` when it may be back."""


class ReconcileError(Exception):
    """Base of errors raised while converging a backend or DNS provider."""


class TemporaryError(ReconcileError):
    """Try again later; *delay* (seconds) overrides the engine's backoff when given."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ReconcileError):
    """Retrying will not help until the desired state or the configuration changes."""

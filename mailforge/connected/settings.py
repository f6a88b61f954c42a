"""Where and as whom a connected mailbox is reached, and its secrets (issue 12).

STAND-IN: helper C's minimal copy of the contract in the shared design, so the store,
worker and credentials code can be written and tested before helper B's module lands;
B's version replaces this file at merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Security = Literal["tls", "starttls", "none"]
AuthMethod = Literal["password", "xoauth2"]

REASONS = ("auth_failed", "tls_error", "unreachable", "timeout", "smtp_rejected",
           "blocked", "imap_error", "oauth_failed")


@dataclass(frozen=True)
class Endpoint:
    host: str  # canonical: lowercase A-label DNS name, or IP literal without brackets
    port: int
    security: Security
    username: str


@dataclass(frozen=True)
class Remote:
    """Where and as whom; no secret."""

    mailbox_id: str
    address: str
    smtp: Endpoint
    imap: Endpoint
    auth: AuthMethod


@dataclass(frozen=True, repr=False)
class Secrets:
    """Never logged: the repr hides the values."""

    smtp_password: str | None = None
    imap_password: str | None = None  # None: smtp_password reused
    access_token: str | None = None  # XOAUTH2 bearer (fresh)

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


class RemoteError(Exception):
    """reason: one of REASONS; detail: a line a person can act on, never a secret."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

"""Where a connected mailbox lives and as whom mailforge logs in (no secret), the
secrets kept apart (their repr hides the values), and the one error type of the
transport: a reason from :data:`REASONS` and a detail a person can act on.

A secret never reaches a detail: details are built from the host, port, mode and the
server's own answer, and :func:`scrub` removes any secret the server might echo.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Security = Literal["tls", "starttls", "none"]
AuthMethod = Literal["password", "xoauth2"]

REASONS = ("auth_failed", "tls_error", "unreachable", "timeout", "smtp_rejected",
           "blocked", "imap_error", "oauth_failed")

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
MAX_DETAIL = 300


@dataclass(frozen=True)
class Endpoint:
    host: str        # canonical: lowercase A-label DNS name, or IP literal without brackets
    port: int
    security: Security
    username: str

    @property
    def where(self) -> str:
        """``host:port`` as a person writes it (IPv6 literals bracketed)."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"


@dataclass(frozen=True)
class Remote:        # where and as whom; no secret
    mailbox_id: str
    address: str
    smtp: Endpoint
    imap: Endpoint
    auth: AuthMethod


def _hidden(v: str | None) -> str:
    return "None" if v is None else "'***'"


@dataclass(frozen=True, repr=False)
class Secrets:       # never logged: __repr__ hides values
    smtp_password: str | None = None
    imap_password: str | None = None   # None: smtp_password reused
    access_token: str | None = None    # XOAUTH2 bearer (fresh)

    def __repr__(self) -> str:
        return (f"Secrets(smtp_password={_hidden(self.smtp_password)}, "
                f"imap_password={_hidden(self.imap_password)}, "
                f"access_token={_hidden(self.access_token)})")

    __str__ = __repr__

    @property
    def imap_secret(self) -> str | None:
        return self.imap_password if self.imap_password is not None else self.smtp_password

    def values(self) -> tuple[str, ...]:
        return tuple(v for v in (self.smtp_password, self.imap_password, self.access_token)
                     if v)


class RemoteError(Exception):
    """reason: one of REASONS; detail: a line a person can act on, never a secret."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"RemoteError({self.reason!r}, {self.detail!r})"


def _forms(secret: str) -> Iterable[str]:
    """A secret and the spellings a server could echo it in (base64 of SASL blobs is
    what AUTH lines carry)."""
    yield secret
    raw = secret.encode("utf-8", "replace")
    yield base64.b64encode(raw).decode()


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """One printable line of at most MAX_DETAIL characters with no secret in it."""
    out = _UNPRINTABLE.sub(" ", text).strip()
    for s in secrets:
        if len(s) < 3:  # a one-character "password" would blank the text, hide nothing
            continue
        for form in _forms(s):
            out = out.replace(form, "***")
    if len(out) > MAX_DETAIL:
        out = out[:MAX_DETAIL - 3] + "..."
    return out


def server_text(raw: bytes | str | None, secrets: Iterable[str] = ()) -> str:
    if raw is None:
        return ""
    s = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw
    return scrub(s, secrets)

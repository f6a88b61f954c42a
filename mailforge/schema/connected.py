"""Models of the connected-mailbox operations (issue 12): connect one, connect many,
read and change a connection.

A connect body nests the settings: ``{email, name, smtp: {host, port, security,
username, password}, imap: {...}, daily_limit, signature, tags, save_sent}``, or, for
XOAUTH2, ``auth: "xoauth2"`` with ``oauth: {token_url, client_id, client_secret,
refresh_token}`` and no passwords. Rules that need the running configuration (the
outbound guard refusing an IP-literal host, the token URL) and the ones across fields
are checked by ``service/connected.py``, naming the field the same way
(``mailboxes[3].smtp.host: ...``). Secrets are never echoed in an error.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from .. import validation
from .base import Body, Items, Reply

Security = Literal["tls", "starttls", "none"]


def _host(value: str) -> str:
    """A DNS name (canonical A-labels) or an IP literal (without brackets)."""
    raw = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if raw.lower().rstrip(".") == "localhost" or raw.lower().rstrip(".").endswith(".localhost"):
        return raw.lower().rstrip(".")  # refused by the guard, naming the field
    try:
        return validation.domain_name(raw)
    except ValueError:
        raise ValueError("must be a DNS name or an IP address") from None


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be 1-65535")
    return value


def _text(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _address(value: str) -> str:
    local, domain = validation.email_address(value)
    return f"{local}@{domain}"


def _signature(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain NUL")
    return value


Host = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_host)]
Port = Annotated[int, AfterValidator(_port)]
Username = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_text)]
Secret = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_text)]
Address = Annotated[str, Field(max_length=320), AfterValidator(_address)]
Tag = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_text)]
DisplayName = Annotated[str, Field(max_length=128),
                        AfterValidator(lambda v: validation.display_name(v))]

HOST = ("The server: a DNS name or an IP address. Addresses outside the public "
        "internet (loopback, private, link-local) are refused unless the operator "
        "allows them (outbound.allow_networks).")
SECURITY = ("tls: implicit TLS (465, 993); starttls: upgrade a plain connection (587, "
            "143); none: no encryption at all (only when the server offers nothing "
            "else). Certificates are always verified.")


class SmtpSettings(Body):
    """Where and as whom to send."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"host": "smtp.gmail.com", "port": 465, "security": "tls",
         "username": "sarah@acme.com", "password": "app-password"}]})
    host: Annotated[Host, Field(description=HOST, examples=["smtp.gmail.com"])]
    port: Annotated[Port, Field(description="TCP port, 1-65535.", examples=[465])]
    security: Annotated[Security, Field(description=SECURITY, examples=["tls"])]
    username: Annotated[Username, Field(description="The login name.",
                                        examples=["sarah@acme.com"])]
    password: Annotated[Secret | None, Field(
        description="The password (an app password for Google or Microsoft); stored "
        "sealed, never shown again. Not with auth xoauth2.",
        examples=["app-password"])] = None


class ImapSettings(Body):
    """Where and as whom to read; username and password left out: SMTP's."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"host": "imap.gmail.com", "port": 993, "security": "tls"}]})
    host: Annotated[Host, Field(description=HOST, examples=["imap.gmail.com"])]
    port: Annotated[Port, Field(description="TCP port, 1-65535.", examples=[993])]
    security: Annotated[Security, Field(description=SECURITY, examples=["tls"])]
    username: Annotated[Username | None, Field(
        description="The login name; left out: SMTP's.", examples=[None])] = None
    password: Annotated[Secret | None, Field(
        description="The password; left out: SMTP's.", examples=[None])] = None


class OAuthSettings(Body):
    """XOAUTH2: the refresh token and where to exchange it for access tokens."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"token_url": "https://oauth2.googleapis.com/token", "client_id": "123.apps",
         "client_secret": "secret", "refresh_token": "1//0g-refresh"}]})
    token_url: Annotated[str, Field(
        max_length=2000, description="The token endpoint (RFC 6749 section 6).",
        examples=["https://oauth2.googleapis.com/token"])]
    client_id: Annotated[Username, Field(description="The OAuth2 client id.",
                                         examples=["123.apps.googleusercontent.com"])]
    client_secret: Annotated[Secret | None, Field(
        description="The client secret, if the client has one; stored sealed.",
        examples=["secret"])] = None
    refresh_token: Annotated[Secret, Field(
        description="The refresh token; stored sealed, refreshed before expiry.",
        examples=["1//0g-refresh"])]


_CONNECT_EXAMPLE: dict[str, Any] = {
    "email": "sarah@acme.com", "name": "Sarah Chen",
    "smtp": {"host": "smtp.gmail.com", "port": 465, "security": "tls",
             "username": "sarah@acme.com", "password": "app-password"},
    "imap": {"host": "imap.gmail.com", "port": 993, "security": "tls"},
    "daily_limit": 50, "tags": ["gmail"]}


class ConnectMailbox(Body):
    """One existing mailbox to connect."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CONNECT_EXAMPLE]})
    email: Annotated[Address, Field(description="The mailbox's address.",
                                    examples=["sarah@acme.com"])]
    name: Annotated[DisplayName | None, Field(description="The display name for sends.",
                                              examples=["Sarah Chen"])] = None
    auth: Annotated[Literal["password", "xoauth2"], Field(
        description="password (SMTP AUTH PLAIN/LOGIN, IMAP LOGIN) or xoauth2 (OAuth2 "
        "bearer tokens; give oauth).", examples=["password"])] = "password"
    smtp: Annotated[SmtpSettings, Field(description="Sending.",
                                        examples=[_CONNECT_EXAMPLE["smtp"]])]
    imap: Annotated[ImapSettings | None, Field(
        description="Reading; left out: the SMTP host on port 993 (tls) with SMTP's "
        "login.", examples=[_CONNECT_EXAMPLE["imap"]])] = None
    oauth: Annotated[OAuthSettings | None, Field(
        description="For auth xoauth2 only.", examples=[None])] = None
    daily_limit: Annotated[int | None, Field(
        ge=0, le=1_000_000, description="Its own daily send limit; left out: the "
        "server's default.", examples=[50])] = None
    signature: Annotated[str | None, Field(max_length=10_000, description="Appended to "
                                           "API sends.", examples=[""]),
                         AfterValidator(lambda v: v if v is None else _signature(v))] = None
    tags: Annotated[list[Tag] | None, Field(max_length=20, description="Labels of yours.",
                                            examples=[["gmail"]])] = None
    save_sent: Annotated[bool | None, Field(
        description="Append a copy of each API send to its Sent folder (false when the "
        "server saves one itself, as Gmail does); left out: true.",
        examples=[True])] = None


class ConnectMailboxes(Body):
    """Up to ``limits.bulk_max_items`` mailboxes in one job: all or none, every item
    checked before anything is accepted."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"mailboxes": [_CONNECT_EXAMPLE]}]})
    mailboxes: Annotated[list[ConnectMailbox],
                         Items("limits.bulk_max_items", noun="mailboxes"),
                         Field(description="The mailboxes; each address once.",
                               examples=[[_CONNECT_EXAMPLE]])]


class SmtpChanges(Body):
    """SMTP settings to change; fields left out stay."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"password": "new-app-pw"}]})
    host: Annotated[Host | None, Field(description=HOST, examples=["smtp.gmail.com"])] = None
    port: Annotated[Port | None, Field(description="TCP port.", examples=[587])] = None
    security: Annotated[Security | None, Field(description=SECURITY,
                                               examples=["starttls"])] = None
    username: Annotated[Username | None, Field(description="The login name.",
                                               examples=["sarah@acme.com"])] = None
    password: Annotated[Secret | None, Field(description="A new password.",
                                             examples=["new-app-pw"])] = None


class ImapChanges(SmtpChanges):
    """IMAP settings to change; fields left out stay (``password`` null: reuse SMTP's
    from now on)."""


class ConnectionChanges(Body):
    """New settings or credentials; the mailbox is tested again (``connecting``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"smtp": {"password": "new-app-pw"}}]})
    auth: Annotated[Literal["password", "xoauth2"] | None, Field(
        description="Switch the login method (xoauth2 needs oauth; password needs "
        "smtp.password).", examples=[None])] = None
    smtp: Annotated[SmtpChanges | None, Field(description="SMTP changes.",
                                              examples=[{"password": "new-app-pw"}])] = None
    imap: Annotated[ImapChanges | None, Field(description="IMAP changes.",
                                              examples=[None])] = None
    oauth: Annotated[OAuthSettings | None, Field(description="New OAuth2 grant (whole).",
                                                 examples=[None])] = None
    save_sent: Annotated[bool | None, Field(description="Append sends to Sent.",
                                            examples=[False])] = None
    tags: Annotated[list[Tag] | None, Field(max_length=20, description="Labels.",
                                            examples=[["gmail"]])] = None


# -------------------------------------------------------------------------- answers


class ServerReply(Reply):
    host: Annotated[str, Field(description="Host.", examples=["smtp.gmail.com"])]
    port: Annotated[int, Field(description="Port.", examples=[465])]
    security: Annotated[Security, Field(description="TLS mode.", examples=["tls"])]
    username: Annotated[str, Field(description="Login name.", examples=["sarah@acme.com"])]


class LastTest(Reply):
    status: Annotated[Literal["pending", "ok", "failed"], Field(
        description="pending until the first test ends.", examples=["ok"])]
    reason: Annotated[str | None, Field(
        description="When failed: auth_failed, tls_error, unreachable, timeout, "
        "smtp_rejected, blocked, imap_error or oauth_failed.", examples=[None])]
    detail: Annotated[str | None, Field(description="What to do about it.",
                                        examples=[None])]
    tested_at: Annotated[str | None, Field(description="RFC 3339.",
                                           examples=["2026-12-02T10:00:05Z"])]


_CONNECTION_EXAMPLE: dict[str, Any] = {
    "id": "usr_01hzy3k8q6ab", "email": "sarah@acme.com", "type": "connected",
    "status": "active", "auth": "password",
    "smtp": {"host": "smtp.gmail.com", "port": 465, "security": "tls",
             "username": "sarah@acme.com"},
    "imap": {"host": "imap.gmail.com", "port": 993, "security": "tls",
             "username": "sarah@acme.com"},
    "imap_password": "smtp", "oauth": None, "save_sent": False, "tags": ["gmail"],
    "sent_folder": "[Gmail]/Sent Mail",
    "last_test": {"status": "ok", "reason": None, "detail": None,
                  "tested_at": "2026-12-02T10:00:05Z"},
    "dns": {"status": "not_checked"}, "dns_checked_at": None,
    "next_test_at": "2026-12-03T10:00:05Z"}


class Connection(Reply):
    """A connected mailbox's settings (never a secret) and its last test."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CONNECTION_EXAMPLE]})
    id: Annotated[str, Field(description="The email user's id.", examples=["usr_01"])]
    email: Annotated[str, Field(description="Its address.", examples=["sarah@acme.com"])]
    type: Annotated[Literal["connected"], Field(description="Always connected.",
                                                examples=["connected"])]
    status: Annotated[str, Field(description="connecting, active, failed (suspended: "
                                 "sending paused).", examples=["active"])]
    auth: Annotated[Literal["password", "xoauth2"], Field(description="Login method.",
                                                          examples=["password"])]
    smtp: Annotated[ServerReply, Field(description="Sending.",
                                       examples=[_CONNECTION_EXAMPLE["smtp"]])]
    imap: Annotated[ServerReply, Field(description="Reading.",
                                       examples=[_CONNECTION_EXAMPLE["imap"]])]
    imap_password: Annotated[Literal["smtp", "own", "none"], Field(
        description="Whose password IMAP uses (smtp: reused; none: xoauth2).",
        examples=["smtp"])]
    oauth: Annotated[dict[str, Any] | None, Field(
        description="{token_url, client_id} for xoauth2, else null.", examples=[None])]
    save_sent: Annotated[bool, Field(description="Sends are appended to Sent.",
                                     examples=[False])]
    tags: Annotated[list[str], Field(description="Labels.", examples=[["gmail"]])]
    sent_folder: Annotated[str | None, Field(description="Found by SPECIAL-USE.",
                                             examples=["[Gmail]/Sent Mail"])]
    last_test: Annotated[LastTest, Field(description="The last connection test.",
                                         examples=[_CONNECTION_EXAMPLE["last_test"]])]
    dns: Annotated[dict[str, Any] | None, Field(
        description="The DNS check of the address's domain (MX, SPF, DMARC, DKIM: "
        "ok/missing/mismatch); null until the first.", examples=[None])]
    dns_checked_at: Annotated[str | None, Field(description="RFC 3339.", examples=[None])]
    next_test_at: Annotated[str | None, Field(description="When it is tested next.",
                                              examples=["2026-12-03T10:00:05Z"])]


class ConnectedUser(Reply):
    id: Annotated[str, Field(description="The email user's id.", examples=["usr_01"])]
    email: Annotated[str, Field(description="Its address.", examples=["sarah@acme.com"])]
    type: Annotated[Literal["connected"], Field(description="Always connected.",
                                                examples=["connected"])]
    status: Annotated[str, Field(description="connecting until tested.",
                                 examples=["connecting"])]


class JobReplyRef(Reply):
    id: Annotated[str, Field(description="The job (GET /v1/jobs/{id}).",
                             examples=["job_01"])]
    type: Annotated[str, Field(description="connect_email_users.",
                               examples=["connect_email_users"])]
    status: Annotated[str, Field(description="pending.", examples=["pending"])]
    total: Annotated[int, Field(description="Mailboxes it tests.", examples=[1])]


class Connected(Reply):
    """Accepted: the mailbox exists (connecting) and is being tested."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "email_user": {"id": "usr_01", "email": "sarah@acme.com", "type": "connected",
                       "status": "connecting"},
        "job": {"id": "job_01", "type": "connect_email_users", "status": "pending",
                "total": 1}}]})
    email_user: Annotated[ConnectedUser, Field(description="The new email user.",
                                               examples=[None])]
    job: Annotated[JobReplyRef, Field(description="The test's job.", examples=[None])]
    recovered: Annotated[bool | None, Field(description="A replayed Idempotency-Key "
                                            "whose first attempt died.",
                                            examples=[None])] = None


class ConnectedMany(Reply):
    """Accepted: the mailboxes exist (connecting) and are being tested."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job": {"id": "job_01", "type": "connect_email_users", "status": "pending",
                "total": 1},
        "email_users": [{"id": "usr_01", "email": "sarah@acme.com", "type": "connected",
                         "status": "connecting"}]}]})
    job: Annotated[JobReplyRef, Field(description="The job (per item: GET /v1/jobs/{id}).",
                                      examples=[None])]
    email_users: Annotated[list[ConnectedUser], Field(description="In request order.",
                                                      examples=[[]])]
    recovered: Annotated[bool | None, Field(description="A replayed Idempotency-Key.",
                                            examples=[None])] = None


class ConnectionChanged(Reply):
    """Accepted: the new settings are being tested."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "connection": _CONNECTION_EXAMPLE,
        "job": {"id": "job_01", "type": "connect_email_users", "status": "pending",
                "total": 1}}]})
    connection: Annotated[Connection, Field(description="The connection now.",
                                            examples=[None])]
    job: Annotated[JobReplyRef, Field(description="The test's job.", examples=[None])]


__all__ = ["ConnectMailbox", "ConnectMailboxes", "Connected", "ConnectedMany", "Connection",
           "ConnectionChanged", "ConnectionChanges", "ImapSettings", "OAuthSettings",
           "SmtpSettings"]

"""Sending through a connected mailbox's own SMTP server.

smtplib runs in a dedicated thread pool (as :mod:`mailforge.mail.submit` does), over
:meth:`Network.open_smtp` (checked address, verified TLS). Logged-in connections are
kept per mailbox and reused, at most ``per_host`` per remote (host, port) in all
(:class:`.pool.HostPool`); a kept connection the server closed meanwhile is replaced
once, transparently; a connection that failed is never reused.

AUTH is written here rather than with ``smtplib.SMTP.login``: login tries every
mechanism in turn (a wrong password would be tried two or three times, which counts
against lockout thresholds at big providers), and smtplib's ``auth`` encodes as ASCII
(a non-ASCII password could not log in). PLAIN (or LOGIN) and XOAUTH2 are a few lines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

from ..mail.submit import SubmitResult
from .network import Network, classify
from .pool import HostPool
from .settings import AuthMethod, Endpoint, Remote, RemoteError, Secrets, server_text

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _b64(data: str) -> str:
    return base64.b64encode(data.encode("utf-8")).decode("ascii")


def xoauth2_blob(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def smtp_login(conn: smtplib.SMTP, ep: Endpoint, auth: AuthMethod, secrets: Secrets) -> None:
    """AUTH on an open session (blocking). Raises RemoteError; no secret in it."""
    if _CONTROL.search(ep.username):
        raise RemoteError("auth_failed", "the user name contains a control character")
    if not conn.has_extn("auth"):
        hint = " (it may offer it only over TLS: try security tls or starttls)" \
            if ep.security == "none" else ""
        raise RemoteError("smtp_rejected", f"{ep.where} offers no authentication{hint}")
    mechs = (conn.esmtp_features.get("auth") or "").upper().split()
    hidden = secrets.values()
    if auth == "xoauth2":
        token = secrets.access_token
        if not token:
            raise RemoteError("oauth_failed", "no access token to log in with")
        if "XOAUTH2" not in mechs:
            raise RemoteError("smtp_rejected", f"{ep.where} does not offer AUTH XOAUTH2 "
                                               f"(offers: {' '.join(mechs) or 'none'})")
        code, resp = conn.docmd("AUTH", "XOAUTH2 " + _b64(xoauth2_blob(ep.username, token)))
        if code == 334:  # the error JSON as a challenge; an empty answer ends it
            code, resp = conn.docmd("")
    else:
        password = secrets.smtp_password
        if password is None:
            raise RemoteError("auth_failed", "no SMTP password stored")
        if "PLAIN" in mechs:
            code, resp = conn.docmd("AUTH", "PLAIN " + _b64(f"\0{ep.username}\0{password}"))
        elif "LOGIN" in mechs:
            code, resp = conn.docmd("AUTH", "LOGIN " + _b64(ep.username))
            if code == 334:
                code, resp = conn.docmd(_b64(password))
        else:
            raise RemoteError("smtp_rejected", f"{ep.where} offers neither AUTH PLAIN nor "
                                               f"LOGIN (offers: {' '.join(mechs) or 'none'})")
    if code == 235 or code == 503:  # 503: already authenticated
        return
    if code == 334:  # a challenge we did not expect: cancel it (RFC 4954 "*")
        with contextlib.suppress(Exception):
            conn.docmd("*")
    raise classify(smtplib.SMTPAuthenticationError(code, server_text(resp, hidden)), ep,
                   hidden, "logging in")


def connect_and_login(net: Network, ep: Endpoint, addresses: list[str], auth: AuthMethod,
                      secrets: Secrets) -> smtplib.SMTP:
    """Open and log in (blocking). Raises RemoteError."""
    conn = net.open_smtp(ep, addresses)
    try:
        smtp_login(conn, ep, auth, secrets)
    except Exception as exc:
        conn.close()
        raise classify(exc, ep, secrets.values(), "logging in", "smtp_rejected") from None
    return conn


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except Exception:
        conn.close()


class RemoteSubmitter:
    def __init__(self, net: Network, per_host: int, idle_seconds: float, threads: int,
                 per_mailbox: int = 2) -> None:
        self.net = net
        self._threads = ThreadPoolExecutor(max_workers=threads,
                                           thread_name_prefix="connected-smtp")
        self._pool: HostPool[smtplib.SMTP] = HostPool(
            per_host, per_mailbox, idle_seconds, self._discard,
            usable=lambda c: c.sock is not None)

    def held(self) -> dict[str, int]:
        """Open connections per remote ``host:port``."""
        return self._pool.held()

    @property
    def opened(self) -> int:
        return self._pool.opened

    def close(self) -> None:
        """Close kept connections (without QUIT: no waiting) and the threads."""
        self._pool.stop()
        for conn in self._pool.take_idle():
            with contextlib.suppress(Exception):
                conn.close()
        self._threads.shutdown(wait=False)

    async def _discard(self, conn: smtplib.SMTP) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, _quit, conn)

    async def _open(self, remote: Remote, secrets: Secrets) -> smtplib.SMTP:
        addresses = await self.net.addresses(remote.smtp)
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, connect_and_login, self.net, remote.smtp, addresses, remote.auth,
            secrets)

    async def submit(self, remote: Remote, secrets: Secrets, sender: str, rcpts: list[str],
                     msg: EmailMessage) -> SubmitResult:
        """Refusals are results; connection, TLS and login failures raise RemoteError."""
        ep = remote.smtp
        host, key = ep.where, (remote.mailbox_id, ep)
        self._pool.start()
        loop = asyncio.get_running_loop()
        conn = await self._pool.acquire(host, key)
        reused = conn is not None
        keep = False
        try:
            if conn is None:
                conn = await self._open(remote, secrets)
            try:
                result, keep = await loop.run_in_executor(
                    self._threads, _send, conn, sender, rcpts, msg, secrets)
            except (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLEOFError) as exc:
                if not reused or "timed out" in str(exc):
                    raise  # a slow server may have the message: never send it twice
                # The kept connection had been closed by the server: one new one.
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                conn = await self._open(remote, secrets)
                result, keep = await loop.run_in_executor(
                    self._threads, _send, conn, sender, rcpts, msg, secrets)
            return result
        except RemoteError:
            raise
        except Exception as exc:
            raise classify(exc, ep, secrets.values(), "sending", "smtp_rejected") from None
        finally:
            if conn is not None and not keep:
                with contextlib.suppress(Exception):
                    conn.close()  # a socket close; no QUIT on a session that failed
                conn = None
            self._pool.release(host, key, conn, keep)


def _send(conn: smtplib.SMTP, sender: str, rcpts: list[str], msg: EmailMessage,
          secrets: Secrets) -> tuple[SubmitResult, bool]:
    """One message on a logged-in session (blocking): (result, keep the session)."""
    hidden = secrets.values()
    try:
        refused = conn.send_message(msg, from_addr=sender, to_addrs=rcpts)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return (SubmitResult(False, code, server_text(text, hidden), tuple(exc.recipients)),
                _rset(conn))
    except smtplib.SMTPServerDisconnected:
        raise
    except smtplib.SMTPResponseException as exc:
        return SubmitResult(False, exc.smtp_code, server_text(exc.smtp_error, hidden)), \
            _rset(conn)
    if refused:
        code, text = next(iter(refused.values()))
        return SubmitResult(True, code, server_text(text, hidden), tuple(refused)), True
    return SubmitResult(True), True


def _rset(conn: smtplib.SMTP) -> bool:
    """After a refusal the session may be mid-transaction: RSET, keep it if that works."""
    try:
        conn.rset()
    except (OSError, smtplib.SMTPException):
        return False
    return True

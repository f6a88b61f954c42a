"""The one place that opens a connection to a host a tenant named (the SMTP and IMAP
servers of connected mailboxes).

- The host is resolved through :meth:`netguard.Guard.resolve`, and the socket goes to
  one of the checked addresses, never to the name again (no DNS-rebinding gap); TLS
  SNI and certificate hostname verification use the name.
- TLS is verified against the system store plus the operator's CA file; there is no
  unverified mode. ``none`` means plaintext with no TLS at all, the tenant's choice.
- Every failure becomes a :class:`RemoteError` (:func:`classify`) whose detail says
  what to fix and carries no secret.

SMTP is smtplib (blocking, run in threads by the callers) with subclasses that connect
to the checked address while keeping the name for TLS. IMAP is aioimaplib with a
client subclass doing the same, plus STARTTLS (aioimaplib has the command but no
method: ``loop.start_tls`` on the protocol's transport is all it needs) and a protocol
that logs no command line (LOGIN and AUTHENTICATE carry secrets).
"""

from __future__ import annotations

import asyncio
import errno
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import aioimaplib

from .. import netguard
from .settings import Endpoint, RemoteError, scrub, server_text

EHLO_NAME = "mailforge"
_NO_ROUTE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN,
             errno.EHOSTDOWN}
_NO_SUCH_HOST = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA")
                 if hasattr(socket, n)}


def _try_next(exc: BaseException) -> bool:
    """A connect failure after which the host's next address is worth a try."""
    return isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError | TimeoutError)
        and exc.errno in _NO_ROUTE)


def classify(exc: BaseException, ep: Endpoint, secrets: Iterable[str] = (),
             during: str = "connecting", fallback: str = "unreachable") -> RemoteError:
    """The reason and an actionable detail for a failure talking to *ep*
    (*fallback*: the reason of a failure of no known kind)."""
    secrets = tuple(secrets)
    where = ep.where
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, netguard.Blocked):
        return RemoteError("blocked", f"{ep.host} resolves to an address mailforge may not "
                                      "connect to (loopback, private, link-local or reserved)")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        text = server_text(exc.smtp_error, secrets)
        if exc.smtp_code in (535, 534, 530):
            return RemoteError("auth_failed", f"{where} refused the login for {ep.username}: "
                                              f"{exc.smtp_code} {text}")
        return RemoteError("smtp_rejected", f"{where} refused authentication: "
                                            f"{exc.smtp_code} {text}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if "timed out" in str(exc):  # smtplib turns a read timeout into a disconnect
            return RemoteError("timeout", f"{where} did not answer in time while {during}")
        return RemoteError("unreachable", f"{where} closed the connection while {during}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return RemoteError("smtp_rejected", f"{where} answered {exc.smtp_code} while "
                                            f"{during}: {server_text(exc.smtp_error, secrets)}")
    if isinstance(exc, smtplib.SMTPException):
        return RemoteError("smtp_rejected", f"{where}: {scrub(str(exc), secrets)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = scrub(exc.verify_message or str(exc.reason or exc), secrets)
        return RemoteError("tls_error", f"the certificate of {where} is not trusted: {why} "
                                        "(an operator can add a CA with connected.ca_file)")
    if isinstance(exc, ssl.SSLError):
        why = scrub(str(exc.reason or exc), secrets)
        hint = ""
        if "WRONG_VERSION_NUMBER" in why or "RECORD_LAYER" in why:
            hint = f" (port {ep.port} may not speak implicit TLS: try security starttls)"
        return RemoteError("tls_error", f"TLS handshake with {where} failed: {why}{hint}")
    if isinstance(exc, TimeoutError | aioimaplib.CommandTimeout):
        return RemoteError("timeout", f"{where} did not answer in time while {during}")
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NO_SUCH_HOST:
            return RemoteError("unreachable", f"{ep.host}: no such host (DNS has no address)")
        return RemoteError("unreachable", f"DNS lookup of {ep.host} failed")
    if isinstance(exc, ConnectionRefusedError):
        return RemoteError("unreachable", f"{where} refused the connection "
                                          "(no server on that port?)")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return RemoteError("unreachable", f"{where} closed the connection while {during}")
    if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
        return RemoteError("unreachable", f"no route to {where}")
    if isinstance(exc, OSError):
        return RemoteError("unreachable", f"cannot connect to {where}: "
                                          f"{scrub(exc.strerror or str(exc), secrets)}")
    if isinstance(exc, aioimaplib.AioImapException):
        return RemoteError("imap_error", f"{where}: {scrub(str(exc), secrets)}")
    return RemoteError(fallback, f"{where}: unexpected failure while {during} "
                                 f"({type(exc).__name__})")


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """System store plus the operator's CA file; hostname checked, TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# ------------------------------------------------------------------ SMTP (threads)

class _PinnedSMTP(smtplib.SMTP):
    """smtplib connecting to a checked address; ``_host`` (STARTTLS SNI) stays the name."""

    def __init__(self, address: str, **kw: Any) -> None:
        self._address = address
        super().__init__(**kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self._address, port, timeout)  # type: ignore[misc, no-any-return]


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    """Implicit TLS to a checked address; SMTP_SSL wraps with ``server_hostname=_host``."""

    def __init__(self, address: str, **kw: Any) -> None:
        self._address = address
        super().__init__(**kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self._address, port, timeout)  # type: ignore[misc, no-any-return]


# ------------------------------------------------------------------ IMAP (asyncio)

class _ImapProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    pending_sync_command: Any
    pending_async_commands: dict[str, Any]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.lost = False
        self.greeted = asyncio.Event()
        self.greeting = b""

    def send(self, line: str, scrub: str | None = None) -> None:
        # aioimaplib logs each command at debug level; LOGIN/AUTHENTICATE carry secrets
        # (and an AUTHENTICATE blob is base64, which its scrubbing misses): no log.
        self.transport.write(f"{line}\r\n".encode())

    async def welcome(self, command: bytes) -> None:
        self.greeting = bytes(command)
        try:
            if b"OK" in command or b"PREAUTH" in command:
                await super().welcome(command)
        finally:
            self.greeted.set()

    def _continuation(self, line: bytes) -> None:
        cmd = self.pending_sync_command
        if cmd is not None and cmd.name == "AUTHENTICATE":
            # An XOAUTH2 failure comes as a challenge carrying an error JSON; the client
            # answers with an empty response and the server ends with NO.
            self.transport.write(b"\r\n")
            return
        super()._continuation(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.greeted.set()
        # Fail the commands in flight at once (aioimaplib would wait for their timeout).
        sync: Any = self.pending_sync_command
        running: dict[str, Any] = self.pending_async_commands
        pending = [sync, *running.values()]
        self.pending_sync_command = None
        self.pending_async_commands = {}
        for cmd in pending:
            if cmd is not None:
                cmd.close(b"connection closed by the server", "BYE")
        super().connection_lost(exc)


class ImapClient(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib connected to a checked *address*; SNI and verification use *name*."""

    def __init__(self, name: str, address: str, port: int, timeout: float,
                 ssl_context: ssl.SSLContext | None) -> None:
        self._address = address
        self._name = name
        super().__init__(host=name, port=port, timeout=timeout, ssl_context=ssl_context)

    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Callable[[Exception | None], None] | None = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        lp = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _ImapProtocol(lp)
        self._client_task = lp.create_task(lp.create_connection(
            lambda: self.protocol, self._address, port, ssl=ssl_context,
            server_hostname=self._name if ssl_context is not None else None,
            ssl_handshake_timeout=self.timeout if ssl_context is not None else None))

    @property
    def alive(self) -> bool:
        return not self.protocol.lost and self.protocol.state in (aioimaplib.AUTH,
                                                                 aioimaplib.SELECTED)

    async def hello(self, ep: Endpoint) -> None:
        await asyncio.wait_for(self._client_task, self.timeout)
        await asyncio.wait_for(self.protocol.greeted.wait(), self.timeout)
        if self.protocol.state not in (aioimaplib.NONAUTH, aioimaplib.AUTH):
            if self.protocol.lost and not self.protocol.greeting:
                raise RemoteError("unreachable", f"{ep.where} closed the connection "
                                                 "before greeting")
            raise RemoteError("imap_error", f"{ep.where} refused the session: "
                                            f"{server_text(self.protocol.greeting)}")

    async def starttls(self, ep: Endpoint, ctx: ssl.SSLContext) -> None:
        proto = self.protocol
        if "STARTTLS" not in proto.capabilities:
            raise RemoteError("tls_error", f"{ep.where} does not offer STARTTLS "
                                           "(try security tls on its TLS port)")
        cmd = aioimaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)
        resp = await asyncio.wait_for(proto.execute(cmd), self.timeout)
        if resp.result != "OK":
            raise RemoteError("tls_error", f"{ep.where} refused STARTTLS: "
                                           f"{server_text(_last(resp.lines))}")
        if proto.incomplete_line:
            # Plaintext sent after the OK would be read as if it came over TLS.
            raise RemoteError("tls_error", f"{ep.where} sent data after STARTTLS")
        lp = asyncio.get_running_loop()
        transport = await lp.start_tls(proto.transport, proto, ctx, server_hostname=self._name,
                                       ssl_handshake_timeout=self.timeout)
        if transport is None:
            raise RemoteError("tls_error", f"STARTTLS with {ep.where} failed")
        proto.transport = transport
        # Capabilities learnt before TLS must be forgotten (RFC 3501 6.2.1).
        await asyncio.wait_for(proto.capability(), self.timeout)

    def abort(self) -> None:
        transport = self.protocol.transport if self.protocol is not None else None
        if transport is not None:
            transport.abort()
        if not self._client_task.done():
            self._client_task.cancel()


def _last(lines: list[Any]) -> bytes:
    for line in reversed(lines):
        if isinstance(line, bytes | bytearray) and line.strip():
            return bytes(line)
    return b""


class Network:
    def __init__(self, guard: netguard.Guard, ca_file: str | None, timeout: float) -> None:
        self.guard = guard
        self.ca_file = ca_file
        self.timeout = timeout
        self.context = tls_context(ca_file)

    async def addresses(self, ep: Endpoint) -> list[str]:
        """The checked addresses of *ep*'s host (RemoteError blocked/unreachable/timeout)."""
        try:
            return await asyncio.wait_for(self.guard.resolve(ep.host, ep.port), self.timeout)
        except Exception as exc:
            raise classify(exc, ep, during="resolving the host") from None

    # -------------------------------------------------------------- SMTP

    def open_smtp(self, ep: Endpoint, addresses: list[str]) -> smtplib.SMTP:
        """Connected, EHLO done, TLS per ``ep.security`` (blocking: call in a thread).
        Raises RemoteError."""
        last: BaseException | None = None
        conn: smtplib.SMTP | None = None
        for addr in addresses:
            try:
                if ep.security == "tls":
                    conn = _PinnedSMTPSSL(addr, host=ep.host, port=ep.port,
                                          local_hostname=EHLO_NAME, timeout=self.timeout,
                                          context=self.context)
                else:
                    conn = _PinnedSMTP(addr, host=ep.host, port=ep.port,
                                       local_hostname=EHLO_NAME, timeout=self.timeout)
                break
            except Exception as exc:
                last = exc
                if not _try_next(exc):
                    break
        if conn is None:
            raise classify(last or OSError("no address"), ep, fallback="imap_error") from None
        try:
            conn.ehlo_or_helo_if_needed()
            if ep.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise RemoteError("tls_error", f"{ep.where} does not offer STARTTLS "
                                                   "(try security tls on its TLS port)")
                try:
                    conn.starttls(context=self.context)
                except smtplib.SMTPResponseException as exc:
                    raise RemoteError("tls_error", f"{ep.where} refused STARTTLS: "
                                      f"{exc.smtp_code} {server_text(exc.smtp_error)}") from None
                conn.ehlo_or_helo_if_needed()
        except Exception as exc:
            conn.close()
            raise classify(exc, ep, during="starting the session",
                           fallback="smtp_rejected") from None
        return conn

    # -------------------------------------------------------------- IMAP

    async def open_imap(self, ep: Endpoint) -> ImapClient:
        """Connected, greeted, TLS per ``ep.security``; not logged in. Raises RemoteError."""
        addresses = await self.addresses(ep)
        ctx = self.context if ep.security == "tls" else None
        last: BaseException | None = None
        for addr in addresses:
            client = ImapClient(ep.host, addr, ep.port, self.timeout, ctx)
            try:
                await client.hello(ep)
                if ep.security == "starttls":
                    await client.starttls(ep, self.context)
                return client
            except Exception as exc:
                client.abort()
                last = exc
                if not _try_next(exc):
                    break
        raise classify(last or OSError("no address"), ep, fallback="imap_error") from None

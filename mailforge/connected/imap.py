"""Reading connected mailboxes over IMAP: logged-in aioimaplib sessions to the
mailbox's own server (:meth:`Network.open_imap`: checked address, verified TLS,
STARTTLS), kept per mailbox and bounded per remote (host, port) by
:class:`.pool.HostPool`.

A session yields a :class:`mailforge.mail.imap.Conn`, so the static operations of
:class:`mailforge.mail.imap.ImapPool` (select, uid_search, uid_fetch, uid_store,
append) work on it unchanged. A session whose body raised, or whose connection the
server closed, is never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aioimaplib

from ..mail.imap import Conn, check_folder
from .network import ImapClient, Network, classify
from .pool import HostPool
from .settings import Endpoint, Remote, RemoteError, Secrets, server_text

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An untagged LIST answer after aioimaplib strips "* LIST ": (flags) delimiter name.
_LIST = re.compile(r'^\((?P<flags>[^)]*)\)\s+(?P<delim>NIL|"(?:\\.|[^"\\])*")\s+(?P<name>.*)$',
                   re.IGNORECASE)
_LITERAL = re.compile(r"^\{(\d+)\+?\}$")


async def imap_login(client: ImapClient, ep: Endpoint, remote: Remote,
                     secrets: Secrets) -> None:
    """LOGIN or AUTHENTICATE XOAUTH2. Raises RemoteError; no secret in it."""
    hidden = secrets.values()
    if _CONTROL.search(ep.username):
        raise RemoteError("auth_failed", "the user name contains a control character")
    if remote.auth == "xoauth2":
        token = secrets.access_token
        if not token:
            raise RemoteError("oauth_failed", "no access token to log in with")
        if "AUTH=XOAUTH2" not in client.protocol.capabilities:
            raise RemoteError("imap_error", f"{ep.where} does not offer AUTHENTICATE XOAUTH2")
        try:
            resp = await client.xoauth2(ep.username, token)
        except UnicodeEncodeError:
            raise RemoteError("auth_failed", "XOAUTH2 needs an ASCII user name") from None
    else:
        password = secrets.imap_secret
        if password is None:
            raise RemoteError("auth_failed", "no IMAP password stored")
        if _CONTROL.search(password):
            raise RemoteError("auth_failed", "the password contains a control character, "
                                             "which IMAP LOGIN cannot carry")
        if "LOGINDISABLED" in client.protocol.capabilities:
            raise RemoteError("imap_error", f"{ep.where} refuses LOGIN on this connection "
                                            "(LOGINDISABLED): use security tls or starttls")
        resp = await client.login(aioimaplib.quoted(ep.username), password)
    if resp.result == "OK":
        return
    text = server_text(_last_text(resp.lines), hidden)
    if resp.result == "BYE":
        raise RemoteError("unreachable", f"{ep.where} closed the connection while logging in")
    if any(code in text.upper() for code in ("[UNAVAILABLE]", "[SERVERBUG]", "[PRIVACYREQUIRED]",
                                             "[LIMIT]", "[INUSE]")):
        raise RemoteError("imap_error", f"{ep.where} refused the login: {text}")
    if resp.result == "NO":
        raise RemoteError("auth_failed", f"{ep.where} refused the login for {ep.username}: "
                                         f"{text}")
    raise RemoteError("imap_error", f"{ep.where} refused the login command: {text}")


def _last_text(lines: list[Any]) -> str:
    for line in reversed(lines):
        if isinstance(line, bytes) and line.strip():
            return line.decode("utf-8", "replace")
    return ""


async def connect_and_login(net: Network, remote: Remote, secrets: Secrets) -> ImapClient:
    ep = remote.imap
    client = await net.open_imap(ep)
    try:
        await imap_login(client, ep, remote, secrets)
    except Exception as exc:
        client.abort()
        raise classify(exc, ep, secrets.values(), "logging in", "imap_error") from None
    return client


async def find_sent(client: ImapClient, ep: Endpoint) -> str | None:
    """The folder marked ``\\Sent`` (RFC 6154), asked with ``RETURN (SPECIAL-USE)``
    where the server has it, else from a plain LIST (Gmail, Outlook and Dovecot send
    the attribute there too). None when no folder is marked, or its name could not be
    used in a quoted IMAP string."""
    proto = client.protocol
    await asyncio.wait_for(proto.capability(), client.timeout)  # post-login capabilities
    caps = {c.upper() for c in proto.capabilities}
    args: tuple[str, ...] = ('""', '"*"')
    if "SPECIAL-USE" in caps and "LIST-EXTENDED" in caps:
        args = ('""', '"*"', "RETURN", "(SPECIAL-USE)")
    resp = await asyncio.wait_for(proto.simple_command("LIST", *args), client.timeout)
    if resp.result != "OK":
        raise RemoteError("imap_error", f"{ep.where} refused LIST: "
                                        f"{server_text(_last_text(resp.lines))}")
    return sent_folder(resp.lines)


def sent_folder(lines: list[Any]) -> str | None:
    """The name of the first LIST entry flagged ``\\Sent`` in aioimaplib's lines."""
    items = list(lines)
    for i, line in enumerate(items):
        if not isinstance(line, bytes):
            continue
        m = _LIST.match(line.decode("utf-8", "replace").strip())
        if m is None or "\\sent" not in m.group("flags").lower().split():
            continue
        raw = m.group("name").strip()
        lit = _LITERAL.match(raw)
        if lit is not None:
            nxt = items[i + 1] if i + 1 < len(items) else None
            if not isinstance(nxt, bytearray):
                return None
            name = bytes(nxt).decode("utf-8", "replace")
        elif raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            name = re.sub(r"\\(.)", r"\1", raw[1:-1])
        else:
            name = raw
        return name if check_folder(name) else None
    return None


class RemoteImapPool:
    def __init__(self, net: Network, per_host: int, per_mailbox: int,
                 idle_seconds: float) -> None:
        self.net = net
        self._pool: HostPool[Conn] = HostPool(per_host, per_mailbox, idle_seconds,
                                              self._discard, usable=_usable)

    def start(self) -> None:
        self._pool.start()

    async def close(self) -> None:
        await self._pool.close()

    def held(self) -> dict[str, int]:
        """Open connections per remote ``host:port``."""
        return self._pool.held()

    @property
    def opened(self) -> int:
        return self._pool.opened

    @staticmethod
    async def _discard(conn: Conn) -> None:
        client = conn.client
        try:
            if isinstance(client, ImapClient) and client.alive:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.logout(), 2)
        finally:
            if isinstance(client, ImapClient):
                client.abort()

    @contextlib.asynccontextmanager
    async def session(self, remote: Remote, secrets: Secrets,
                      keep: bool = True) -> AsyncIterator[Conn]:
        """A logged-in connection of *remote*'s mailbox: a kept one or a new one.
        *keep* False logs it out after use. Raises RemoteError when it cannot log in."""
        ep = remote.imap
        host, key = ep.where, (remote.mailbox_id, ep)
        conn = await self._pool.acquire(host, key)
        ok = False
        try:
            if conn is None:
                client = await connect_and_login(self.net, remote, secrets)
                conn = Conn(client, remote.address)
            yield conn
            ok = True
        finally:
            if conn is not None:
                conn.last_used = time.monotonic()
            self._pool.release(host, key, conn, keep=ok and keep)


def _usable(conn: Conn) -> bool:
    client = conn.client
    return bool(client.alive) if isinstance(client, ImapClient) else False

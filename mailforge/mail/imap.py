"""Reading mailboxes over IMAP (aioimaplib) as the Dovecot master user, through a pool
of logged-in connections reused across requests, at most ``cap`` per mailbox.

A connection that fails in use is dropped, never returned to the pool; idle ones are
closed after ``idle_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aioimaplib

from ..log import get

log = get(__name__)

# Printable ASCII without space, quote or backslash (then quoted as an IMAP string).
_LOGIN = re.compile(r'[\x21\x23-\x5b\x5d-\x7e]{1,400}')
# Printable ASCII without quote, backslash or the LIST wildcards; matched in full.
_FOLDER = re.compile(r'[\x20\x21\x23\x24\x26-\x29\x2b-\x5b\x5d-\x7e]{1,200}')


class ImapError(Exception):
    """An IMAP command failed (the message carries the server's answer, no secret)."""


def check_folder(name: str) -> bool:
    return bool(_FOLDER.fullmatch(name))


def quote(name: str) -> str:
    return '"' + name + '"'


@dataclass
class Conn:
    client: aioimaplib.IMAP4
    address: str
    last_used: float = field(default_factory=time.monotonic)
    selected: str | None = None


def parse_fetch(lines: list[Any]) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """Split aioimaplib FETCH response lines into messages: (text outside literals,
    [(text just before the literal, literal bytes), ...])."""
    out: list[tuple[str, list[tuple[str, bytes]]]] = []
    text: list[str] = []
    lits: list[tuple[str, bytes]] = []
    for line in lines:
        if isinstance(line, bytearray):
            lits.append((text[-1] if text else "", bytes(line)))
            continue
        s = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
        if re.match(r"^\d+ FETCH \(", s):
            if text:
                out.append((" ".join(text), lits))
            text, lits = [s], []
        elif text:
            text.append(s)
    if text:
        out.append((" ".join(text), lits))
    return out


class ImapPool:
    def __init__(self, host: str, port: int, login_for: Any, password: str, cap: int,
                 idle_seconds: float, timeout: float) -> None:
        self.host = host
        self.port = port
        self._login_for = login_for
        self._password = password
        self.cap = cap
        self.idle_seconds = idle_seconds
        self.timeout = timeout
        self._idle: dict[str, list[Conn]] = defaultdict(list)
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="imap-pool-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        conns = [c for lst in self._idle.values() for c in lst]
        self._idle.clear()
        await asyncio.gather(*(self._logout(c) for c in conns), return_exceptions=True)

    def open_count(self, address: str) -> int:
        sem = self._slots.get(address)
        return 0 if sem is None else self.cap - sem._value

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_seconds / 4))
            now = time.monotonic()
            for address in list(self._idle):
                keep: list[Conn] = []
                old: list[Conn] = []
                for c in self._idle[address]:
                    (old if now - c.last_used > self.idle_seconds else keep).append(c)
                if keep:
                    self._idle[address] = keep
                else:
                    del self._idle[address]
                for c in old:
                    await self._logout(c)

    async def _logout(self, c: Conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.client.logout(), 2)

    async def _connect(self, address: str) -> Conn:
        login = self._login_for(address)
        # aioimaplib sends the user name as it is: a name with a space, a quote or a line
        # break (a mailbox created before names were validated strictly) would break the
        # command or inject another one, as the master user. Refused before any I/O.
        if not _LOGIN.fullmatch(login):
            raise ImapError("IMAP login refused: the mailbox name is not a plain address")
        client = aioimaplib.IMAP4(host=self.host, port=self.port, timeout=self.timeout)
        await client.wait_hello_from_server()
        resp = await client.login(aioimaplib.quoted(login), self._password)
        if resp.result != "OK":
            with contextlib.suppress(Exception):
                await client.logout()
            raise ImapError(f"IMAP login as {address} failed")
        self.opened += 1
        return Conn(client, address)

    @contextlib.asynccontextmanager
    async def session(self, address: str, keep: bool = True) -> AsyncIterator[Conn]:
        """A logged-in connection for *address*: an idle one of the pool or a new one.
        *keep* False logs it out after use instead of keeping it idle (the sweep: a
        mailbox it visits is not read again soon, and thousands of idle sessions would
        each hold a Dovecot imap process)."""
        sem = self._slots.setdefault(address, asyncio.Semaphore(self.cap))
        async with sem:
            idle = self._idle.get(address)
            conn = idle.pop() if idle else None
            if conn is None:
                conn = await self._connect(address)
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok and keep:
                    conn.last_used = time.monotonic()
                    self._idle[address].append(conn)
                else:
                    await self._logout(conn)
                if not self._idle.get(address):
                    self._idle.pop(address, None)

    # ------------------------------------------------------------ operations

    @staticmethod
    async def select(conn: Conn, folder: str) -> int:
        """SELECT *folder*; returns its UIDVALIDITY. Always re-issued: it also makes
        Dovecot report mail delivered since the last command."""
        resp = await conn.client.select(quote(folder))
        if resp.result != "OK":
            conn.selected = None
            raise ImapError(f"cannot open folder {folder}")
        conn.selected = folder
        for line in resp.lines:
            s = line.decode("utf-8", "replace") if isinstance(line, bytes | bytearray) \
                else str(line)
            m = re.search(r"\[UIDVALIDITY (\d+)\]", s)
            if m:
                return int(m.group(1))
        raise ImapError("server gave no UIDVALIDITY")

    @staticmethod
    async def uid_search(conn: Conn, *criteria: str) -> list[int]:
        resp = await conn.client.uid_search(*criteria, charset=None)
        if resp.result != "OK":
            raise ImapError("search failed")
        uids: list[int] = []
        for line in resp.lines:
            s = line.decode() if isinstance(line, bytes | bytearray) else str(line)
            # aioimaplib strips the "SEARCH" keyword: the untagged line is bare numbers.
            words = s.split()
            if words and words[0].upper() == "SEARCH":
                words = words[1:]
            if words and all(w.isdigit() for w in words):
                uids.extend(int(w) for w in words)
        return uids

    @staticmethod
    async def uid_fetch(conn: Conn, uids: str, parts: str
                        ) -> list[tuple[str, list[tuple[str, bytes]]]]:
        resp = await conn.client.uid("fetch", uids, parts)
        if resp.result != "OK":
            raise ImapError("fetch failed")
        return parse_fetch(resp.lines)

    @staticmethod
    async def uid_store(conn: Conn, uid: int, op: str, flags: str) -> None:
        resp = await conn.client.uid("store", str(uid), op, flags)
        if resp.result != "OK":
            raise ImapError("store failed")

    @staticmethod
    async def append(conn: Conn, folder: str, data: bytes, flags: str) -> None:
        resp = await conn.client.append(data, mailbox=quote(folder), flags=flags)
        if resp.result == "OK":
            return
        # The folder may not exist yet (a new mailbox has only INBOX): create it, retry.
        await conn.client.create(quote(folder))
        with contextlib.suppress(Exception):
            await conn.client.subscribe(quote(folder))
        resp = await conn.client.append(data, mailbox=quote(folder), flags=flags)
        if resp.result != "OK":
            raise ImapError(f"cannot store the copy in {folder}")

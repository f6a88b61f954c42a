"""Bounded pooling of logged-in connections to remote servers, shared by the SMTP
submitter and the IMAP pool of connected mailboxes (pure bookkeeping, no I/O of its
own: closing is the caller's ``discard``).

- A *slot* is the right to hold one connection to a remote (host, port); at most
  ``per_host`` exist per remote, so 500 mailboxes on one provider hold at most
  ``per_host`` sockets to it, whatever the load.
- Idle connections are kept per mailbox (key: mailbox id and endpoint, so a changed
  user name never reuses a session of the old one) and reused.
- When the remote is full, an idle connection of another mailbox gives way (the
  oldest is closed and its slot reused); otherwise the caller queues, first come first
  served. A connection released while others queue goes to the first waiter: as is
  when it is the same mailbox's, else it is closed and the waiter gets the slot.
- A connection released as failed (``keep=False``) or found unusable is closed, never
  reused.
- ``per_mailbox`` bounds the connections one mailbox holds at once (in use or idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C")


@dataclass
class _Idle(Generic[C]):
    conn: C
    since: float


@dataclass
class _Mailbox:
    held: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


@dataclass
class _Host(Generic[C]):
    open: int = 0
    idle: dict[Hashable, list[_Idle[C]]] = field(default_factory=dict)
    waiters: deque[tuple[Hashable, asyncio.Future[C | None]]] = field(default_factory=deque)


class HostPool(Generic[C]):
    def __init__(self, per_host: int, per_mailbox: int, idle_seconds: float,
                 discard: Callable[[C], Awaitable[None]],
                 usable: Callable[[C], bool] = lambda c: True) -> None:
        if per_host < 1 or per_mailbox < 1:
            raise ValueError("per_host and per_mailbox must be at least 1")
        self.per_host = per_host
        self.per_mailbox = per_mailbox
        self.idle_seconds = idle_seconds
        self._discard = discard
        self._usable = usable
        self._hosts: dict[str, _Host[C]] = {}
        self._mailboxes: dict[Hashable, _Mailbox] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0  # slots granted for a new connection (tests, benchmarks)

    # ------------------------------------------------------------ views

    def held(self) -> dict[str, int]:
        """Slots taken per remote: connections open, being opened or being closed."""
        return {k: h.open for k, h in self._hosts.items() if h.open}

    def idle_count(self) -> int:
        return sum(len(lst) for h in self._hosts.values() for lst in h.idle.values())

    def _fresh(self, it: _Idle[C], now: float) -> bool:
        return now - it.since < self.idle_seconds and self._usable(it.conn)

    # ------------------------------------------------------------ acquire / release

    async def acquire(self, host: str, mailbox: Hashable) -> C | None:
        """A kept connection of *mailbox* to *host*, or None: a slot is reserved for
        a new one, which the caller opens. Every acquire is paired with a release."""
        await self._enter(mailbox)
        try:
            return await self._slot(host, mailbox)
        except BaseException:
            self._leave(mailbox)
            raise

    async def _enter(self, mailbox: Hashable) -> None:
        m = self._mailboxes.get(mailbox)
        if m is None:
            m = self._mailboxes[mailbox] = _Mailbox()
        if m.held < self.per_mailbox and not m.waiters:
            m.held += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        m.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._leave(mailbox)  # handed the turn as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    m.waiters.remove(fut)
            raise

    def _leave(self, mailbox: Hashable) -> None:
        m = self._mailboxes[mailbox]
        while m.waiters:
            fut = m.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the turn passes on; held unchanged
                return
        m.held -= 1
        if m.held <= 0:
            del self._mailboxes[mailbox]

    async def _slot(self, host: str, mailbox: Hashable) -> C | None:
        h = self._hosts.get(host)
        if h is None:
            h = self._hosts[host] = _Host()
        now = time.monotonic()
        own = h.idle.get(mailbox)
        while own:
            it = own.pop()
            if not own:
                del h.idle[mailbox]
            if self._fresh(it, now):
                return it.conn
            await self._close_quietly(it.conn)  # its slot is now ours
            self._granted()
            return None
        if h.open < self.per_host and not h.waiters:
            h.open += 1
            self._granted()
            return None
        victim = self._oldest_idle(h)
        if victim is not None:
            await self._close_quietly(victim.conn)  # another mailbox's idle gives way
            self._granted()
            return None
        fut: asyncio.Future[C | None] = asyncio.get_running_loop().create_future()
        entry = (mailbox, fut)
        h.waiters.append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Handed a connection or a slot just as we were cancelled: pass it on.
                self._pass_on(host, mailbox, fut.result())
            else:
                with contextlib.suppress(ValueError):
                    h.waiters.remove(entry)
            raise

    def _granted(self) -> None:
        self.opened += 1

    def _oldest_idle(self, h: _Host[C]) -> _Idle[C] | None:
        best: tuple[Hashable, int] | None = None
        for mb, lst in h.idle.items():
            for i, it in enumerate(lst):
                if best is None or it.since < h.idle[best[0]][best[1]].since:
                    best = (mb, i)
        if best is None:
            return None
        lst = h.idle[best[0]]
        it = lst.pop(best[1])
        if not lst:
            del h.idle[best[0]]
        return it

    def release(self, host: str, mailbox: Hashable, conn: C | None, keep: bool) -> None:
        """Give back what acquire gave: *conn* (None when none was opened) is kept
        idle when *keep* and usable, else closed; its slot goes to the next waiter."""
        self._leave(mailbox)
        self._pass_on(host, mailbox, conn if keep else None, closing=None if keep else conn)

    def _pass_on(self, host: str, mailbox: Hashable, conn: C | None,
                 closing: C | None = None) -> None:
        h = self._hosts.get(host)
        if h is None:  # the pool was closed meanwhile
            for c in (conn, closing):
                if c is not None:
                    self._spawn(self._close_quietly(c))
            return
        if closing is not None:
            self._spawn(self._close_then_free(host, closing))
            return
        if conn is None:
            self._free(host)
            return
        if not self._usable(conn):
            self._spawn(self._close_then_free(host, conn))
            return
        while h.waiters and h.waiters[0][1].done():
            h.waiters.popleft()
        if h.waiters:
            mb, fut = h.waiters[0]
            if mb == mailbox:
                h.waiters.popleft()
                fut.set_result(conn)
            else:
                self._spawn(self._close_then_free(host, conn))
            return
        h.idle.setdefault(mailbox, []).append(_Idle(conn, time.monotonic()))

    def _free(self, host: str) -> None:
        h = self._hosts.get(host)
        if h is None:
            return
        while h.waiters:
            _, fut = h.waiters.popleft()
            if not fut.done():
                self._granted()
                fut.set_result(None)
                return
        h.open -= 1
        if h.open <= 0 and not h.idle:
            del self._hosts[host]

    # ------------------------------------------------------------ closing

    async def _close_quietly(self, conn: C) -> None:
        with contextlib.suppress(Exception):
            await self._discard(conn)

    async def _close_then_free(self, host: str, conn: C) -> None:
        try:
            await self._close_quietly(conn)
        finally:
            self._free(host)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reap(self) -> None:
        """Close idle connections past ``idle_seconds`` or no longer usable."""
        now = time.monotonic()
        for host, h in list(self._hosts.items()):
            for mb in list(h.idle):
                keep = [it for it in h.idle[mb] if self._fresh(it, now)]
                old = [it for it in h.idle[mb] if not self._fresh(it, now)]
                if keep:
                    h.idle[mb] = keep
                else:
                    del h.idle[mb]
                for it in old:
                    self._spawn(self._close_then_free(host, it.conn))

    def take_idle(self) -> list[C]:
        """Remove every idle connection and its slot, for a caller that closes them
        itself at once (a synchronous shutdown)."""
        out: list[C] = []
        for host, h in list(self._hosts.items()):
            for lst in h.idle.values():
                out += [it.conn for it in lst]
                h.open -= len(lst)
            h.idle.clear()
            if h.open <= 0 and not h.waiters:
                del self._hosts[host]
        return out

    def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def start(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_loop(), name="connected-pool-reaper")

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, min(self.idle_seconds / 4, 30.0)))
            self.reap()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for host, h in list(self._hosts.items()):
            for lst in h.idle.values():
                for it in lst:
                    self._spawn(self._close_then_free(host, it.conn))
            h.idle.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

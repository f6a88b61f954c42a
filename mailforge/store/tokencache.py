"""A short-lived in-process cache of token lookups, invalidated through ``NOTIFY``.

Authenticating a request costs a round trip to PostgreSQL (the token, its state and its
account). This cache keeps, per token id, what that lookup answered for a few seconds
(``api.token_cache_seconds``) so that a client's next requests skip it. It is safe
because every change that could make an entry wrong reaches every API process at
once: triggers on ``api_tokens`` and ``accounts`` (migration 0011) ``NOTIFY`` channel
``mailforge_auth`` in the changing transaction itself, and each process LISTENs on a
connection of its own. A revoked token is therefore refused as soon as the revoking
transaction commits plus the notification's delivery (milliseconds), on every daemon.

What it never does:
- cache a failed lookup (unknown token, wrong secret, revoked, expired, deleted
  account): failures always reach the database, and the per-client auth-failure rate
  limit (api/http.py) bounds them. So no answer an attacker provokes is ever served
  to anyone else, and a wrong secret never creates or changes an entry;
- answer from an entry when it cannot hear invalidations: while the LISTEN connection
  is down (or not yet up) every lookup goes to the database, and on reconnecting the
  cache starts empty (notifications sent meanwhile are lost);
- keep an entry filled by a lookup that raced an invalidation: each invalidation bumps
  a generation, and a lookup that started before it does not store its answer.

The secret is always checked: an entry holds the stored SHA-256 of the secret, compared
in constant time with the presented one on every hit. An entry also holds the token's
expiry, checked against the clock on every hit, so an expired token is refused without
any notification. Entries live at most ``ttl`` seconds whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import asyncpg

from ..log import get
from ..models import Principal
from .queries import Q

log = get(__name__)

CHANNEL = "mailforge_auth"
# Bounds memory: only successful lookups are stored, so only holders of valid tokens
# can add entries; beyond this the oldest go first.
MAX_ENTRIES = 10_000
# How often the LISTEN connection is checked alive (a connection dropped without a
# close, e.g. by a firewall, is noticed within this plus the ping's timeout).
PING_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Entry:
    secret_hash: bytes
    principal: Principal
    # Epoch seconds after which the token is expired; None: never.
    expires_at: float | None
    # time.monotonic() when the lookup was made; the entry dies ttl seconds later.
    fetched: float
    # time.monotonic() of the last last_used_at write for this token by this process.
    touched: float


class TokenCache:
    """Token id -> ``Entry``, usable only while ``listening``."""

    def __init__(self, dsn: str, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.dsn = dsn
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, Entry] = {}
        self.generation = 0
        self.listening = False
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._up = asyncio.Event()
        self._closing = False

    # ------------------------------------------------------------------- lookups

    def get(self, token_id: str) -> Entry | None:
        if not self.listening:
            return None
        entry = self._entries.get(token_id)
        if entry is None:
            return None
        if time.monotonic() - entry.fetched >= self.ttl:
            self._entries.pop(token_id, None)
            return None
        return entry

    def put(self, token_id: str, entry: Entry, generation: int) -> None:
        """Store *entry*, made by a lookup that started at *generation*, unless an
        invalidation came in since (its answer may predate the change)."""
        if not self.listening or generation != self.generation or self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries and token_id not in self._entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[token_id] = entry

    def drop(self, token_id: str) -> None:
        self._entries.pop(token_id, None)

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------- invalidation

    def invalidate(self, payload: str) -> None:
        """Apply one notification: ``tok <id>``, ``acct <id>``, or anything else (``*``)
        as "forget everything"."""
        self.generation += 1
        kind, _, ident = payload.partition(" ")
        if kind == "tok" and ident:
            self._entries.pop(ident, None)
        elif kind == "acct" and ident:
            for tid in [t for t, e in self._entries.items()
                        if e.principal.account_id == ident]:
                del self._entries[tid]
        else:
            self._entries.clear()

    def _forget_all(self) -> None:
        self.generation += 1
        self._entries.clear()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.invalidate(str(payload))

    def _on_terminate(self, _conn: object) -> None:
        self._stop_using()

    def _stop_using(self) -> None:
        self.listening = False
        self._up.clear()
        self._forget_all()
        self._lost.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start listening (in the background; the cache is used once it listens)."""
        if self.ttl > 0 and self._task is None:
            self._task = asyncio.create_task(self._listen_loop(), name="token-cache")

    async def wait_listening(self, seconds: float = 10.0) -> bool:
        """Whether the cache listens (is used) within *seconds*."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), seconds)
        return self.listening

    async def close(self) -> None:
        self._closing = True
        self._stop_using()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    async def _listen_loop(self) -> None:
        delay = 0.2
        while not self._closing:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                self._conn = conn
                self._lost.clear()
                conn.add_termination_listener(self._on_terminate)
                await conn.add_listener(CHANNEL, self._on_notify)
                # Whatever was notified while not listening is lost: start empty.
                self._forget_all()
                self.listening = True
                self._up.set()
                delay = 0.2
                log.debug("token cache listening")
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), PING_SECONDS)
                    if not self._lost.is_set():
                        await conn.fetchval(Q.ping, timeout=PING_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._closing:
                    log.warning("token cache not listening; lookups go to the database",
                                error=f"{type(exc).__name__}: {exc}")
            finally:
                self._stop_using()
                if conn is not None:
                    conn.terminate()
                self._conn = None
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

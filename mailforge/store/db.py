"""The store's one style: a ``Database`` (the pool, the mail host, short transactions)
and one ``Repository`` per concept built on it (mailboxes, domains, jobs, tokens...).

Every repository method that reaches tenant data takes the account id first and every
query filters on it and on the request's domain restriction (``scope``). Repositories
raise domain errors (``mailforge.errors``), never HTTP ones: ``api/`` maps them. A
transaction never spans a call to a backend, a DNS provider or a remote mail server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection, whether taken from the pool or opened on its own.
if TYPE_CHECKING:
    Conn = asyncpg.Connection[Any] | PoolConnectionProxy[Any]


async def listen(dsn: str, channel: str,
                 callback: Callable[[Any, int, str, object], None]) -> asyncpg.Connection[Any]:
    """A connection of its own LISTENing on *channel* (a pooled one would be handed to
    others); the caller closes it, and reopens it when it drops."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    try:
        await conn.add_listener(channel, callback)
    except BaseException:
        await conn.close()
        raise
    return conn


class Database:
    """The pool and the mail host this process serves; the one place transactions open."""

    def __init__(self, pool: asyncpg.Pool, mail_host: str = "default") -> None:
        self.pool = pool
        self.mail_host = mail_host

    async def reachable(self) -> bool:
        """Whether PostgreSQL answers a trivial query now."""
        try:
            async with self.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT true"))
        except Exception:
            return False

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        """A short transaction: commit on success, roll back on any exception."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn


class Repository:
    """Base of every per-concept repository: holds the database it queries."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pool = db.pool

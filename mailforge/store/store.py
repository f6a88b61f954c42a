"""The store: every read and write of desired state, scoped by account.

Tenant scoping lives here: each tenant method takes the account id and every query
filters on it, so a handler cannot forget the check. The engine's repository
(``store.reconcile``) is scoped by mail host instead. Transactions are short and never
span a backend call.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import asyncpg

from .accounts import Accounts
from .aliases import Aliases
from .audit import Audit
from .connected import Connections
from .db import Database
from .dns import Dns
from .domains import Domains
from .domains import canonical_domain as canonical_domain  # re-exported (tokens, ...)
from .idempotency import Idempotency
from .jobs import Jobs
from .mail import InboundScans, Senders, Sending
from .mailboxes import Mailboxes
from .reconcile import Reconcile
from .reputation import Reputations
from .tokens import TOKEN_PREFIX as TOKEN_PREFIX
from .tokens import Tokens
from .tokens import hash_secret as hash_secret
from .tokens import split_token as split_token
from .webhooks import Webhooks

WORK_CHANNEL = "mailforge_work"

if TYPE_CHECKING:
    from .db import Conn


async def _init_connection(conn: Conn) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")


async def _keep_session(conn: Conn) -> None:
    """What the pool does to a connection on release, beyond asyncpg's own rollback of
    an open transaction: nothing. asyncpg's default reset sends ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, a
    round trip per request (measured in docs/benchmarks.md) undoing session state this
    code never leaves behind: no ``SET`` (only ``SET LOCAL``-free statements and
    transaction-scoped ``pg_advisory_xact_lock``), no cursors outside transactions, no
    ``LISTEN`` on pooled connections (the engine and the token cache listen on
    connections of their own); the one session advisory lock (``migrate.apply``) is
    released in a ``finally`` and a connection failing there is broken anyway. Code
    that adds session state must use a connection of its own, not the pool's."""


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     init=_init_connection, reset=_keep_session)
    assert pool is not None
    return pool




class Store(Database):
    """The database and its repositories, one per concept (``store/db.py``)."""

    def __init__(self, pool: asyncpg.Pool, mail_host: str = "default") -> None:
        super().__init__(pool, mail_host)
        self.jobs = Jobs(self)
        self.mailboxes = Mailboxes(self)
        self.aliases = Aliases(self)
        self.tokens = Tokens(self)
        self.accounts = Accounts(self, self.jobs, self.tokens)
        self.audit = Audit(self)
        self.idempotency = Idempotency(self)
        self.reconcile = Reconcile(self)
        self.domains = Domains(self)
        self.dns = Dns(self)
        self.reputation = Reputations(self)
        self.senders = Senders(self)
        self.sending = Sending(self)
        self.inbound_scans = InboundScans(self)
        self.webhooks = Webhooks(self)
        self.connections = Connections(self)


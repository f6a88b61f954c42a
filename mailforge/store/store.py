"""The store: every read and write of desired state, scoped by account.

Tenant scoping lives here: each tenant method takes the account id and every query
filters on it, so a handler cannot forget the check. The engine's repository
(``store.reconcile``) is scoped by mail host instead. Transactions are short and never
span a backend call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import ids, publicsuffix, validation
from .. import reserved as reserved_mod
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..models import Domain, Job, from_record
from . import scope
from .accounts import Accounts
from .aliases import Aliases
from .audit import Audit
from .db import Database
from .idempotency import Idempotency
from .jobs import Jobs
from .mail import InboundScans, Senders, Sending
from .mailboxes import Mailboxes
from .queries import Q
from .reconcile import Reconcile
from .tokens import TOKEN_PREFIX as TOKEN_PREFIX
from .tokens import Tokens
from .tokens import hash_secret as hash_secret
from .tokens import split_token as split_token
from .webhooks import Webhooks

WORK_CHANNEL = "mailforge_work"
# pg_advisory_xact_lock(DOMAIN_NAMES_LOCK, hashtext(top-level label)) serialises the
# connects of names that could be at, above or under one another (such names always
# share their last label), so the ownership check cannot be raced.
DOMAIN_NAMES_LOCK = 7270002

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


def canonical_domain(value: object, field: str = "domain") -> str:
    """The canonical name (``validation.domain_name``), or 400 naming *field*."""
    try:
        return validation.domain_name(value)
    except ValueError as exc:
        raise ValidationFailed([f"{field}: {exc}"]) from None


def _relatives_params(names: Sequence[str]) -> tuple[list[str], list[str], list[str],
                                                      list[str]]:
    """Parameters of ``Q.domain_name_relatives`` for *names*: the names, all their
    proper parents, and for their descendants a byte range over ``reverse(name)``
    (every descendant of n reversed starts with reverse("." + n), which ends in ".";
    "/" is the next byte)."""
    parents = sorted({n.split(".", k)[k] for n in names for k in range(1, n.count(".") + 1)})
    lows = [("." + n)[::-1] for n in names]
    return list(names), parents, lows, [lo[:-1] + "/" for lo in lows]




class Store(Database):
    """The database and its repositories, one per concept (``store/db.py``). Methods
    still defined here move to their concept's repository as each is rebuilt."""

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
        self.senders = Senders(self)
        self.sending = Sending(self)
        self.inbound_scans = InboundScans(self)
        self.webhooks = Webhooks(self)

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        return self.tx()

    # ------------------------------------------------------------------------ domains

    async def connect_domains(self, account_id: str, names: Sequence[tuple[str, str]],
                              dns_provider: str,
                              credentials: Callable[[str], bytes] | None = None,
                              reserved: Sequence[str] = ()) -> list[Domain]:
        """Record domains (ascii name, unicode name), all or none.

        Ownership of names: a name belongs to one account. Connecting a name at, under
        or above a name of another account (``mail.`` or ``mta-sts.`` of its domain, a
        sub-domain, its parent) is 409 ``domain_name_owned``; the same name is 409
        ``domain_exists``; names at, under or above the account's own domains are
        allowed (its sub-domains, alias domains). A public suffix (``co.uk``) is no
        one's: 400. Names are canonicalised here again, so no caller can store a second
        spelling. *credentials* (domain id -> sealed DNS credentials) are stored in the
        same transaction. A name at, under or above one of *reserved* (the host's own
        names, ``mailforge.reserved``) is 409 ``domain_name_reserved``. See
        docs/names.md.
        """
        canon: list[tuple[str, str]] = []
        errs: list[str] = []
        for i, (raw, _) in enumerate(names):
            try:
                n = validation.domain_name(raw)
            except ValueError as exc:
                errs.append(f"domains[{i}]: {exc}")
                continue
            if n in (c for c, _ in canon):
                errs.append(f"domains[{i}]: {n} is listed twice")
            elif publicsuffix.is_public_suffix(n):
                # Owning it would lock every other account out of every name under it.
                errs.append(f"domains[{i}]: {n} is a public suffix (like co.uk); connect "
                            "a name registered under it")
            canon.append((n, validation.unicode_domain(n)))
        if errs:
            raise ValidationFailed(errs)
        hits = reserved_mod.refusals([n for n, _ in canon], reserved)
        if hits:
            raise Conflict("domain_name_reserved", "A name at, under or above a name of "
                           "this mail host cannot be connected.", hits)
        scope.check_new(n for n, _ in canon)
        wanted = [n for n, _ in canon]
        async with self._tx() as conn:
            acct = await conn.fetchrow(Q.lock_account, account_id)
            if acct is None:
                raise NotFound("account")
            # Names that could be related share their last label: one lock per top-level
            # label, taken in order (no deadlock), held until commit.
            for tld in sorted({n.rsplit(".", 1)[-1] for n in wanted}):
                await conn.execute(Q.lock_domain_namespace, DOMAIN_NAMES_LOCK, tld)
            rows = await conn.fetch(Q.domain_name_relatives, *_relatives_params(wanted))
            taken, owned = [], []
            for i, n in enumerate(wanted):
                if any(r["name"] == n for r in rows):
                    taken.append(f"domains[{i}]: {n} is already connected")
                elif any(r["account_id"] != account_id and reserved_mod.related(r["name"], n)
                         for r in rows):
                    owned.append(f"domains[{i}]: {n} is at, under or above a domain "
                                 "of another account")
            if taken:
                raise Conflict("domain_exists", "A domain is already connected.",
                               taken + owned)
            if owned:
                raise Conflict("domain_name_owned", "A name at, under or above a domain "
                               "of another account cannot be connected.", owned)
            used = await conn.fetchval(Q.count_domains, account_id)
            if used + len(canon) > acct["domain_limit"]:
                raise Forbidden("limit_exceeded", "The account's domain limit would be exceeded.",
                                extra={"resource": "domains", "used": used,
                                       "limit": acct["domain_limit"],
                                       "requested": len(canon)})
            out: list[Domain] = []
            for i, (ascii_name, uname) in enumerate(canon):
                try:
                    row = await conn.fetchrow(Q.insert_domain, ids.new_id("dom"), account_id,
                                              ascii_name, uname, self.mail_host, dns_provider)
                except asyncpg.UniqueViolationError:
                    raise Conflict("domain_exists", "A domain is already connected.",
                                   [f"domains[{i}]: {ascii_name} is already connected"]
                                   ) from None
                assert row is not None
                if credentials is not None:
                    await conn.execute(Q.set_dns_credentials, row["id"],
                                       credentials(row["id"]))
                out.append(from_record(Domain, row))
            return out

    async def get_domain(self, account_id: str, domain_id: str) -> Domain:
        if not ids.has_prefix(domain_id, "dom"):
            raise NotFound("domain")  # no such id can exist (and NUL never reaches SQL)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain, account_id, domain_id)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row)

    async def find_domain(self, account_id: str, name: object, field: str = "domain") -> Domain:
        """The account's domain of that name, in any spelling (case, trailing dot,
        Unicode or A-labels, Unicode full stops); 400 naming *field* if it is no name."""
        canon = canonical_domain(name, field)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain_by_name, account_id, canon)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row)

    async def list_domains(self, account_id: str, limit: int,
                           offset: int) -> tuple[list[Domain], int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.list_domains, account_id, limit, offset, scope.names())
            total = rows[0]["total_count"] if rows else await conn.fetchval(
                Q.count_all_domains, account_id, scope.names())
        return [from_record(Domain, r) for r in rows], int(total)

    async def setup_domain(self, account_id: str, domain_id: str) -> Job:
        async with self._tx() as conn:
            row = await conn.fetchrow(Q.request_domain_setup, account_id, domain_id)
            if row is None:
                raise NotFound("domain")
            scope.check(row["name"])  # raising here rolls the update back
            job = await self._insert_job(conn, account_id, "domain_setup", domain_id,
                                         [("domain", domain_id, row["generation"])])
            await conn.execute(Q.notify_work, row["mail_host"])
        return job

    # --------------------------------------------------------------------------- jobs

    async def _insert_job(self, conn: Conn, account_id: str, job_type: str,
                          resource_id: str | None, items: Sequence[tuple[str, str, int]],
                          result: dict[str, Any] | None = None,
                          sealed_secrets: bytes | None = None,
                          secrets_expire_at: datetime | None = None) -> Job:
        return await self.jobs.insert(conn, account_id, job_type, resource_id, items, result,
                                      sealed_secrets, secrets_expire_at)


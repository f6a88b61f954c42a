"""Domains: connect (names owned by one account), read, list with their reputation,
and the changes of intent a request records (setup, DKIM rotation, deletion) with their
job. Every tenant method takes the account id and applies the token's domain
restriction (``scope``) in its query or before its transaction commits; the operator's
CLI methods (``by_name_any``, ``allow_dns_changes``) name no account by design.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from .. import ids, publicsuffix, validation
from .. import reserved as reserved_mod
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..models import Domain, Job, from_record
from . import scope
from .db import Database, Repository
from .jobs import Jobs
from .queries import Q
from .reputation import ReputationCounts

if TYPE_CHECKING:
    from .db import Conn

# pg_advisory_xact_lock(DOMAIN_NAMES_LOCK, hashtext(top-level label)) serialises the
# connects of names that could be at, above or under one another (such names always
# share their last label), so the ownership check cannot be raced.
DOMAIN_NAMES_LOCK = 7270002

# A position in the oldest-first list of domains: (created_at, id) of the last shown.
DomainPosition = tuple[datetime, str]


@dataclass(frozen=True)
class DomainPage:
    """A page of domains, each with its reputation counts over the window asked for."""

    items: list[tuple[Domain, ReputationCounts]]
    total: int
    # Where the next page starts, or None when this page is the last.
    next_position: DomainPosition | None


@dataclass(frozen=True)
class DnsPermission:
    """What the operator allowed on a domain (``mailforge dns allow``)."""

    force: bool
    overwrite: bool


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


class Domains(Repository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.jobs = Jobs(db)

    # ------------------------------------------------------------------ connect

    async def connect(self, account_id: str, names: Sequence[str], dns_provider: str,
                      credentials: Callable[[str], bytes] | None = None,
                      reserved: Sequence[str] = ()) -> list[Domain]:
        """Record domains (names in any spelling), all or none.

        Ownership of names: a name belongs to one account. Connecting a name at, under
        or above a name of another account (``mail.`` or ``mta-sts.`` of its domain, a
        sub-domain, its parent) is 409 ``domain_name_owned``; the same name is 409
        ``domain_exists``; names at, under or above the account's own domains are
        allowed (its sub-domains, alias domains). A public suffix (``co.uk``) is no
        one's: 400. Names are canonicalised here, so no caller can store a second
        spelling. *credentials* (domain id -> sealed DNS credentials) are stored in the
        same transaction. A name at, under or above one of *reserved* (the host's own
        names, ``mailforge.reserved``) is 409 ``domain_name_reserved``. See
        docs/names.md.
        """
        canon: list[tuple[str, str]] = []
        errs: list[str] = []
        for i, raw in enumerate(names):
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
        async with self.db.tx() as conn:
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
                                              ascii_name, uname, self.db.mail_host,
                                              dns_provider)
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

    async def forget_unset(self, account_id: str, domain_id: str) -> None:
        """Remove a just-connected domain whose zone turned out not to be ours."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.forget_unset_domain, account_id, domain_id)

    # --------------------------------------------------------------------- read

    async def get(self, account_id: str, domain_id: str) -> Domain:
        if not ids.has_prefix(domain_id, "dom"):
            raise NotFound("domain")  # no such id can exist (and NUL never reaches SQL)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain, account_id, domain_id)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row)

    async def find(self, account_id: str, name: object, field: str = "domain") -> Domain:
        """The account's domain of that name, in any spelling (case, trailing dot,
        Unicode or A-labels, Unicode full stops); 400 naming *field* if it is no name."""
        canon = canonical_domain(name, field)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain_by_name, account_id, canon)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row)

    async def get_with_reputation(self, account_id: str, domain_id: str,
                                  days: int) -> tuple[Domain, ReputationCounts]:
        """The domain and its reputation counts over the last *days*, in one query."""
        if not ids.has_prefix(domain_id, "dom"):
            raise NotFound("domain")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain_with_reputation, account_id, domain_id,
                                      days)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row), ReputationCounts.of(row)

    async def list_page(self, account_id: str, limit: int, offset: int,
                        after: DomainPosition | None, days: int) -> DomainPage:
        """Oldest first: *limit* domains after position *after* (keyset) and *offset*,
        each with its reputation counts over the last *days* (one query for the page,
        not one per domain), and how many domains the caller may see in all."""
        restricted = scope.names()
        after_at, after_id = after if after is not None else (None, None)
        async with self.pool.acquire() as conn:
            # One more than asked: whether a next page exists, without another query.
            rows = await conn.fetch(Q.list_domains_page, account_id, limit + 1, offset,
                                    restricted, after_at, after_id, days)
            total = await conn.fetchval(Q.count_all_domains, account_id, restricted)
        items = [(from_record(Domain, r), ReputationCounts.of(r)) for r in rows[:limit]]
        last = items[-1][0] if len(rows) > limit and items else None
        return DomainPage(items, int(total),
                          (last.created_at, last.id) if last is not None else None)

    async def is_served(self, name: str) -> bool:
        """Is *name* (canonical) a set-up, proven, not deleted domain (any account)? For
        the public MTA-STS and autoconfig answers, which name no account."""
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval(Q.domain_served, name))

    # ------------------------------------------------------------ intent + job

    async def _change(self, conn: Conn, query: str, account_id: str, domain_id: str,
                      job_type: str) -> tuple[Domain, Job]:
        """Run *query* (an UPDATE of one domain, scoped by account and restriction,
        RETURNING it) and record its job, on the caller's transaction. A domain the
        query does not match (another account's, outside the restriction, or not in a
        state that allows the change) is 404 and nothing is written."""
        if not ids.has_prefix(domain_id, "dom"):
            raise NotFound("domain")
        row = await conn.fetchrow(query, account_id, domain_id, scope.names())
        if row is None:
            raise NotFound("domain")
        job = await self.jobs.insert(conn, account_id, job_type, domain_id,
                                     [("domain", domain_id, row["generation"])])
        await conn.execute(Q.notify_work, row["mail_host"])
        return from_record(Domain, row), job

    async def setup(self, account_id: str, domain_id: str) -> Job:
        """Ask for the domain to be set up (DKIM keys, DNS records, the mail server)."""
        async with self.db.tx() as conn:
            job = await self._setup(conn, account_id, domain_id)
        return job

    async def _setup(self, conn: Conn, account_id: str, domain_id: str) -> Job:
        _, job = await self._change(conn, Q.request_domain_setup, account_id, domain_id,
                                    "domain_setup")
        await self._bump_alias_target(conn, domain_id)
        # A domain already set up and converged gets no new generation, so no pass will
        # settle this job: settle it now from the domain's observed state.
        settled = {r["job_id"] for r in await conn.fetch(Q.settle_job_items, [domain_id])}
        if job.id in settled:
            await conn.fetch(Q.refresh_jobs, [job.id])
        return job

    async def prove_and_setup(self, account_id: str, domain_id: str) -> Job:
        """check-ns found the delegation of a domain not yet set up: record the proof
        and queue its setup in one transaction, so the engine (woken once, at commit)
        serves and sets it up in one pass rather than a pass for each."""
        async with self.db.tx() as conn:
            host = await conn.fetchval(Q.record_domain_ownership, domain_id)
            if host is not None:
                await conn.execute(Q.notify_work, host)
            return await self._setup(conn, account_id, domain_id)

    async def _bump_alias_target(self, conn: Conn, domain_id: str) -> None:
        """The domain *domain_id* is an alias of (if any) routes it: a new generation."""
        host = await conn.fetchval(Q.bump_alias_target, domain_id)
        if host is not None:
            await conn.execute(Q.notify_work, host)

    async def request_rotation(self, account_id: str, domain_id: str) -> Job:
        """Record that new DKIM keys are wanted (the DNS step makes them); only for a
        set-up domain that is not being deleted, else 404 and nothing changes."""
        async with self.db.tx() as conn:
            _, job = await self._change(conn, Q.request_dkim_rotation, account_id,
                                        domain_id, "dkim_rotate")
        return job

    async def request_delete(self, account_id: str, domain_id: str) -> Job:
        async with self.db.tx() as conn:
            _, job = await self._change(conn, Q.request_domain_delete, account_id,
                                        domain_id, "domain_delete")
            await self._bump_alias_target(conn, domain_id)
        return job

    async def record_ownership(self, domain_id: str) -> bool:
        """Record that the domain's name is proven (first time only: then its
        generation moves on and the engine serves it). True when this call recorded it.
        Callers found the domain within their scope (check-ns) or claimed it (engine)."""
        async with self.db.tx() as conn:
            host = await conn.fetchval(Q.record_domain_ownership, domain_id)
            if host is not None:
                await conn.execute(Q.notify_work, host)
        return host is not None

    # ------------------------------------------------------------ operator CLI

    async def by_name_any(self, name: str) -> Domain | None:
        """The domain of canonical *name*, whichever account's (operator CLI only)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.domain_by_name_any, name)
        return None if row is None else from_record(Domain, row)

    async def allow_dns_changes(self, name: str, force: bool,
                                overwrite: bool) -> DnsPermission | None:
        """Record the operator's permission on domain *name* and queue it for reconcile;
        None when there is no such live domain (operator CLI only)."""
        async with self.db.tx() as conn:
            row = await conn.fetchrow(Q.allow_dns_changes, name, force, overwrite)
            if row is None:
                return None
            await conn.execute(Q.notify_work, row["mail_host"])
        return DnsPermission(force=row["dns_force"], overwrite=row["dns_overwrite"])


__all__ = ["DOMAIN_NAMES_LOCK", "DnsPermission", "DomainPage", "DomainPosition", "Domains",
           "canonical_domain"]

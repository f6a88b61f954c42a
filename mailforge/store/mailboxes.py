"""Mailboxes ("email users"): creation within the account's limit, reads, updates,
deletion into restorable tombstones, restore, purge after retention.

Every method that reaches tenant data takes the account id first, every query filters
on it, and each applies the request's domain restriction (``scope``). Writes that the
backend must see bump the mailbox's ``generation``, record a job item for it and wake
the workers, all in one short transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import ids, paging
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..models import Domain, Job, Mailbox, from_record
from . import scope
from .db import Database, Repository
from .jobs import Jobs
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn

# ORDER BY clauses a client may choose (?sort=); never built from client text. Each ends
# with the id, so the order is total and a keyset cursor names one place in it.
SORTS = {
    "created_at": "m.created_at, m.id",
    "-created_at": "m.created_at DESC, m.id DESC",
    "email": "m.address, m.id",
    "-email": "m.address DESC, m.id DESC",
    "name": "m.name, m.address, m.id",
    "-name": "m.name DESC, m.address DESC, m.id DESC",
    "status": "m.status, m.address, m.id",
    "-status": "m.status DESC, m.address DESC, m.id DESC",
    "updated_at": "m.updated_at, m.id",
    "-updated_at": "m.updated_at DESC, m.id DESC",
}

# Counter rows of one account (migration 0011) beyond which they are folded into one
# per status.
FOLD_PIECES = 32

# SQLSTATE of migration 0012's trigger when a write would take an account past its
# mailbox limit (DETAIL: {"used", "limit", "requested"} as JSON).
LIMIT_SQLSTATE = "MF403"


def _connected() -> Conflict:
    return Conflict("email_user_connected",
                    "This email user is a connected mailbox: its password, quota and "
                    "mail are its provider's (change its connection instead).")


def _limit_exceeded(exc: asyncpg.PostgresError) -> Forbidden:
    extra = json.loads(getattr(exc, "detail", None) or "{}")
    return Forbidden("limit_exceeded", "The account's mailbox limit would be exceeded.",
                     extra={"resource": "email_users", "used": int(extra.get("used", 0)),
                            "limit": int(extra.get("limit", 0)),
                            "requested": int(extra.get("requested", 0))})


# The keyset of each sort: (column, its type), in ORDER BY order.
_TS, _TEXT = "timestamptz", "text"
_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "created_at": (("created_at", _TS), ("id", _TEXT)),
    "email": (("address", _TEXT), ("id", _TEXT)),
    "name": (("name", _TEXT), ("address", _TEXT), ("id", _TEXT)),
    "status": (("status", _TEXT), ("address", _TEXT), ("id", _TEXT)),
    "updated_at": (("updated_at", _TS), ("id", _TEXT)),
}


@dataclass(frozen=True)
class MailboxPage:
    """A page of mailbox rows (the API's columns and ``domain_name``), the total of
    the filtered list, and the cursor of the next page (None on the last)."""

    rows: list[asyncpg.Record]
    total: int
    next_cursor: str | None


def _keyset(sort: str, cursor: str | None, first: int) -> tuple[str, list[Any]]:
    """The WHERE condition continuing after *cursor* (parameters from ``$first``) and
    its parameters; a cursor that is not one of this sort's is a 400 on ``cursor``."""
    if cursor is None:
        return "TRUE", []
    keys = _KEYS[sort.lstrip("-")]
    values = paging.decode(cursor, sort, len(keys))
    params: list[Any] = []
    for (_col, kind), value in zip(keys, values, strict=True):
        if not isinstance(value, str):
            raise _bad_cursor()
        if kind == _TS:
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                raise _bad_cursor() from None
            if when.tzinfo is None:
                raise _bad_cursor()
            params.append(when)
        else:
            params.append(value)
    cols = ", ".join(f"m.{c}" for c, _ in keys)
    args = ", ".join(f"${first + n}::{kind}" for n, (_c, kind) in enumerate(keys))
    return f"({cols}) {'<' if sort.startswith('-') else '>'} ({args})", params


def _bad_cursor() -> ValidationFailed:
    return ValidationFailed(["cursor: not a cursor of this list (use next_cursor as given)"])


def _cursor_of(sort: str, row: asyncpg.Record) -> str:
    values = []
    for col, kind in _KEYS[sort.lstrip("-")]:
        v = row[col]
        # Microseconds kept: the cursor must name the row's exact place.
        values.append(v.isoformat() if kind == _TS else v)
    return paging.encode(sort, values)


@dataclass(frozen=True)
class MailboxChanges:
    """A PATCH: None means unchanged (``daily_send_limit`` uses ``clear_send_limit``).
    *sealed_password*: a new password sealed for the worker to hash
    (``pending_passwords.seal``); the old hash serves until then."""

    name: str | None = None
    sealed_password: bytes | None = None
    quota_mb: int | None = None
    daily_send_limit: int | None = None
    clear_send_limit: bool = False
    signature: str | None = None
    suspended: bool | None = None


@dataclass(frozen=True)
class NewMailbox:
    """A mailbox to create: its id (chosen by the caller, the context its password is
    sealed to) and its password sealed for the worker to hash."""

    id: str
    local_part: str
    name: str
    sealed_password: bytes
    quota_mb: int


@dataclass(frozen=True)
class PendingPassword:
    """A password waiting to be hashed: the mailbox and the sealed value as stored (the
    hash is written only where the value is still this one)."""

    mailbox_id: str
    sealed: bytes


@dataclass(frozen=True)
class CreatedMailbox:
    id: str
    address: str
    local_part: str
    created_at: datetime


async def queue_work(jobs: Jobs, conn: Conn, account_id: str, job_type: str,
                     resource_id: str | None, items: Sequence[tuple[str, int]],
                     domains: Sequence[tuple[str, str]], kind: str = "mailbox") -> Job:
    """On the caller's transaction: a job waiting for *items* (id, generation), and the
    workers of the touched (domain id, mail host) pairs woken."""
    job = await jobs.insert(conn, account_id, job_type, resource_id,
                            [(kind, i, g) for i, g in items])
    for domain_id, _host in sorted(set(domains)):
        await conn.execute(Q.touch_domain_for_work, domain_id)
    for host in sorted({h for _, h in domains}):
        await conn.execute(Q.notify_work, host)
    return job


class Mailboxes(Repository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.jobs = Jobs(db)

    async def fold_counts(self) -> None:
        """Fold the mailbox counter rows of accounts where they piled up (the daemon calls
        this every minute; a list folds its own account's)."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.fold_all_mailbox_counts, FOLD_PIECES)

    async def list_rows(self, account_id: str, domain: str | None, status: str | None,
                        search: str | None, sort: str, limit: int, offset: int = 0,
                        cursor: str | None = None, kind: str | None = None) -> MailboxPage:
        """A page of the account's mailboxes within the request's domain restriction, as
        rows for rendering straight to JSON (no model objects: they cost more than the
        query on a 100-item page). *cursor*: a ``next_cursor`` of this list and sort
        (keyset: constant time however deep); *offset* applies after it."""
        after, key_params = _keyset(sort, cursor, 9)
        query = Q.list_mailboxes_page.replace("{order}", SORTS[sort]).replace("{after}", after)
        # A domain-restricted token sees only its domains' mailboxes.
        allowed = scope.names()
        async with self.pool.acquire() as conn:
            # One more row than asked: whether a next page exists, without a second query.
            rows = await conn.fetch(query, account_id, domain, status, search, limit + 1, offset,
                                    allowed, kind, *key_params)
            if domain is None and allowed is None and search is None and kind is None:
                # The common case from the counter rows of migration 0011: constant time
                # however many mailboxes the account or the host holds.
                counted = await conn.fetchrow(Q.count_account_mailboxes, account_id, status)
                assert counted is not None
                total = counted["total"]
                if counted["pieces"] > FOLD_PIECES:
                    await conn.execute(Q.fold_mailbox_counts, account_id)
            else:
                total = await conn.fetchval(Q.count_mailboxes_page, account_id, domain, status,
                                            search, allowed, kind)
        more = len(rows) > limit
        rows = rows[:limit]
        return MailboxPage(rows, int(total or 0), _cursor_of(sort, rows[-1]) if more else None)

    async def create(self, account_id: str, domain: Domain, items: Sequence[NewMailbox],
                     job_type: str, seal: Callable[[str], bytes] | None = None,
                     secrets_ttl: float = 0, bulk: bool = False
                     ) -> tuple[Job, list[CreatedMailbox]]:
        """Record mailboxes and their job in one transaction, within the account's limit.

        *seal* (job id -> sealed bytes): one-time secrets readable from the job for
        *secrets_ttl* seconds, sealed with the job id as context and stored in the job's
        own transaction, so a job never exists without the secrets it announces. *bulk*:
        errors name ``users[n].username`` (else ``username``).

        Concurrent creations of one account do not wait for each other here: addresses
        are unique by index, and the limit is checked and counted by migration 0012's
        trigger on the insert, the last statement before the commit (its counter row is
        locked only from there to the commit). The account row is only key-shared: that
        still makes an alias creation for the same address (which locks it) wait."""
        scope.check(domain.name)
        addresses = [f"{i.local_part}@{domain.name}" for i in items]
        async with self.db.tx() as conn:
            if await conn.fetchrow(Q.share_account, account_id) is None:
                raise NotFound("account")
            taken = {r["address"] for r in await conn.fetch(Q.taken_addresses, addresses,
                                                            account_id)}
            if taken and bulk:
                raise Conflict("address_taken", "Some addresses are already taken.",
                               [f"users[{n}].username: {a} is already taken"
                                for n, a in enumerate(addresses) if a in taken])
            if taken:
                raise Conflict("address_taken", "An address is already taken.",
                               [f"username: {addresses[0]} is already taken"])
            # A new mailbox starts at generation 1 (the column default).
            job = await queue_work(
                self.jobs, conn, account_id, job_type,
                items[0].id if len(items) == 1 else domain.id, [(i.id, 1) for i in items],
                [(domain.id, domain.mail_host)])
            if seal is not None:
                await conn.execute(Q.set_job_secrets, job.id, seal(job.id), secrets_ttl)
            try:
                rows = await conn.fetch(
                    Q.insert_mailboxes, [i.id for i in items], account_id, domain.id,
                    [i.local_part for i in items], addresses, [i.name for i in items],
                    [i.sealed_password for i in items], [i.quota_mb for i in items])
            except asyncpg.UniqueViolationError:
                raise Conflict("address_taken", "An address is already taken.") from None
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == LIMIT_SQLSTATE:
                    raise _limit_exceeded(exc) from None
                raise
        by_addr = {r["address"]: r for r in rows}
        created = [CreatedMailbox(by_addr[a]["id"], a, by_addr[a]["local_part"],
                                  by_addr[a]["created_at"]) for a in addresses]
        return job, created

    async def get(self, account_id: str, mailbox_id: str) -> tuple[Mailbox, str]:
        """The mailbox and its domain's name; 404 outside the account or restriction."""
        if not ids.has_prefix(mailbox_id, "usr"):
            raise NotFound("email user")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_mailbox, account_id, mailbox_id)
        if row is None:
            raise NotFound("email user")
        scope.check(row["domain_name"], "email user")
        return from_record(Mailbox, row), row["domain_name"]

    async def update(self, account_id: str, mailbox_id: str,
                     ch: MailboxChanges) -> tuple[Mailbox, str, Job | None]:
        if not ids.has_prefix(mailbox_id, "usr"):
            raise NotFound("email user")
        async with self.db.tx() as conn:
            row = await conn.fetchrow(Q.lock_mailbox, account_id, mailbox_id)
            if row is None:
                raise NotFound("email user")
            scope.check(row["domain_name"], "email user")
            if row["deleted"]:
                raise Conflict("mailbox_deleted",
                               "This email user is deleted; restore it first.")
            cur = from_record(Mailbox, row)
            quota = ch.quota_mb or cur.quota_mb
            suspended = cur.suspended if ch.suspended is None else ch.suspended
            # Only what the mail server holds needs a new generation (and a job).
            if cur.kind == "connected" and (ch.sealed_password is not None
                                            or ch.quota_mb is not None):
                raise _connected()
            # A connected mailbox is not the mail server's: pausing it is mailforge's
            # own refusal to send (mail service), at once.
            backend = cur.kind == "managed" and (
                ch.sealed_password is not None or quota != cur.quota_mb
                or suspended != cur.suspended)
            send_limit = None if ch.clear_send_limit else (
                ch.daily_send_limit if ch.daily_send_limit is not None
                else cur.daily_send_limit)
            new = await conn.fetchrow(
                Q.update_mailbox, account_id, mailbox_id,
                cur.name if ch.name is None else ch.name, ch.sealed_password, quota, send_limit,
                cur.signature if ch.signature is None else ch.signature, backend, suspended)
            assert new is not None  # the row is locked and not deleted
            job = None
            if backend:
                job = await queue_work(self.jobs, conn, account_id, "email_user_update",
                                       mailbox_id, [(mailbox_id, new["generation"])],
                                       [(row["domain_id"], row["mail_host"])])
        return from_record(Mailbox, new), row["domain_name"], job

    async def delete(self, account_id: str, mailbox_ids: Sequence[str],
                     retention_seconds: float, field: str = "ids") -> Job:
        """Mark mailboxes deleted (all or nothing); their mail is kept for the
        retention. *field* names the ids in error details (``ids[3]: ...``); a single
        ``id`` is a plain 404 / 409."""
        async with self.db.tx() as conn:
            found = {r["id"]: r for r in await conn.fetch(Q.mailboxes_by_ids, account_id,
                                                          list(mailbox_ids))
                     if scope.allows(r["domain_name"])}
            single = len(mailbox_ids) == 1 and field == "id"
            missing = [f"{field}[{n}]: no such email user"
                       for n, i in enumerate(mailbox_ids) if i not in found]
            if missing:
                raise NotFound("email user") if single else NotFound(
                    "email user", missing, "Some email users do not exist.")
            gone = [f"{field}[{n}]: already deleted" for n, i in enumerate(mailbox_ids)
                    if found[i]["deleted"]]
            if gone:
                raise Conflict("mailbox_deleted", "An email user is already deleted.",
                               [] if single else gone)
            rows = await conn.fetch(Q.delete_mailboxes, account_id, list(mailbox_ids),
                                    retention_seconds)
            by_id = {r["id"]: r for r in rows}
            # Connected ones are disconnected at once: the row and its credentials are
            # deleted (the remote mailbox is never touched); their items are done now.
            connected = [i for i in mailbox_ids if found[i]["kind"] == "connected"]
            if connected:
                await conn.execute(Q.conn_delete, account_id, connected)
            job = await queue_work(
                self.jobs, conn, account_id, "email_user_delete",
                mailbox_ids[0] if len(mailbox_ids) == 1 else None,
                [(i, by_id[i]["generation"] if i in by_id else found[i]["generation"] + 1)
                 for i in mailbox_ids],
                [(found[i]["domain_id"], found[i]["mail_host"]) for i in mailbox_ids
                 if found[i]["kind"] == "managed"])
            if connected:
                await conn.fetch(Q.settle_job_items, connected)
                await conn.fetch(Q.refresh_jobs, [job.id])
                refreshed = await conn.fetchrow(Q.get_job, account_id, job.id, None)
                if refreshed is not None:
                    job = from_record(Job, refreshed)
            return job

    async def restore(self, account_id: str, mailbox_id: str) -> tuple[Job, str]:
        """Bring a deleted mailbox back with its retained mail, within the retention
        and the account's limit; (job, address)."""
        if not ids.has_prefix(mailbox_id, "usr"):
            raise NotFound("email user")
        async with self.db.tx() as conn:
            # Key-shared, as in create: an alias taking the address meanwhile waits.
            if await conn.fetchrow(Q.share_account, account_id) is None:
                raise NotFound("account")
            row = await conn.fetchrow(Q.lock_mailbox, account_id, mailbox_id)
            if row is None:
                raise NotFound("email user")
            scope.check(row["domain_name"], "email user")
            if not row["deleted"]:
                raise Conflict("not_deleted", "This email user is not deleted.")
            if row["kind"] == "connected":
                raise _connected()
            if await conn.fetchval(Q.live_address_taken, row["address"], account_id):
                raise Conflict("address_taken",
                               "The address was given to another user since.",
                               [f"email: {row['address']} is already taken"])
            try:
                # The limit is checked by migration 0012's trigger on this update.
                new = await conn.fetchrow(Q.restore_mailbox, account_id, mailbox_id)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == LIMIT_SQLSTATE:
                    raise _limit_exceeded(exc) from None
                raise
            if new is None:
                raise Conflict("retention_expired",
                               "The retention period is over; the mail has been destroyed.")
            job = await queue_work(self.jobs, conn, account_id, "email_user_restore",
                                   mailbox_id, [(mailbox_id, new["generation"])],
                                   [(row["domain_id"], row["mail_host"])])
        return job, str(row["address"])

    async def taken_in_domains(self, account_id: str, domain_ids: Sequence[str]) -> set[str]:
        """Every address taken in these domains of the account (mailboxes, aliases,
        tombstones still holding theirs)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.taken_in_domains, account_id, list(domain_ids))
        return {r["address"] for r in rows}

    # Pending passwords: the engine's (pending_passwords.py), scoped by mail host.

    async def pending_passwords(self, domain_ids: Sequence[str]) -> list[PendingPassword]:
        """The sealed new passwords of mailboxes in these domains (deleted ones too: a
        mailbox deleted before its first hash still needs one if it is restored)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.pending_passwords, list(domain_ids))
        return [PendingPassword(r["id"], bytes(r["pending_password"])) for r in rows]

    async def settle_passwords(self, done: Sequence[tuple[PendingPassword, str]]) -> set[str]:
        """Write each hash and wipe its sealed value, in one statement; only where the
        sealed value is still the one hashed (compare-and-set: a newer password stored
        meanwhile stays pending). Returns the ids written."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.settle_pending_passwords,
                                    [p.mailbox_id for p, _ in done],
                                    [p.sealed for p, _ in done], [h for _, h in done])
        return {r["id"] for r in rows}

    async def fail_passwords(self, failed: Sequence[PendingPassword], locked_hash: str,
                             error: str) -> tuple[dict[str, bool], list[str]]:
        """Sealed values that cannot be opened (the master key was replaced): each is
        wiped, its mailbox recorded failed with *error* at its current generation and,
        if it never had a hash, given *locked_hash* (no password verifies against it);
        its job items settle (a deleted one needs no password: only wiped). Compare-and-
        set on the sealed value, as ``settle_passwords``. Returns ({id written: whether
        deleted}, the ids of jobs finished now)."""
        async with self.db.tx() as conn:
            rows = await conn.fetch(Q.fail_pending_passwords, [p.mailbox_id for p in failed],
                                    [p.sealed for p in failed], locked_hash, error)
            written = {r["id"]: bool(r["deleted"]) for r in rows}
            live = [i for i, deleted in written.items() if not deleted]
            if not live:
                return written, []
            job_ids = sorted({r["job_id"] for r in await conn.fetch(Q.settle_job_items, live)})
            finished = [r["id"] for r in await conn.fetch(Q.refresh_jobs, job_ids)
                        if r["status"] in ("completed", "failed")] if job_ids else []
        return written, finished

    # Retention: the engine's, scoped by mail host rather than by account.

    async def expired_tombstones(self, limit: int) -> list[tuple[str, str, str]]:
        """(domain, local part, mailbox id) of this host's tombstones past retention."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.expired_tombstones, self.db.mail_host, limit)
        return [(r["domain_name"], r["local_part"], r["id"]) for r in rows]

    async def purge_tombstones(self, mailbox_ids: Sequence[str]) -> int:
        async with self.pool.acquire() as conn:
            status = await conn.execute(Q.purge_tombstones, list(mailbox_ids))
        return int(status.split()[-1])

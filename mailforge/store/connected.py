"""Connected mailboxes (issue 12): existing SMTP/IMAP accounts on their own provider,
recorded as ``mailboxes`` rows of kind ``connected`` with no domain (so no query that
feeds Postfix, Dovecot, DKIM or DNS can see them: those join ``domains`` or filter on
``domain_id``) and a ``mailbox_connections`` row: where and as whom to log in, the
secrets sealed by the caller, and the state of the connection test.

Tenant methods take the account id first and apply the token's domain restriction to
the address's domain (``scope``), as for managed mailboxes; another account's mailbox
and one outside the restriction are the same 404. The worker's methods are host-wide:
it claims due connections under a lease (``FOR UPDATE SKIP LOCKED``, committed at once),
probes outside any transaction, and records by compare-and-set on ``test_generation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .. import ids
from ..errors import Conflict, NotFound
from ..models import Job
from . import scope
from .db import Repository
from .jobs import Jobs
from .mailboxes import LIMIT_SQLSTATE, _limit_exceeded
from .queries import Q
from .webhooks import Webhooks

# The channel the connection worker listens on (a hint: it polls as well).
CHANNEL = "mailforge_connected"
# Separator of tags inside one text of the bulk insert (tags never hold control
# characters: schema/connected.py refuses them).
_TAG_SEP = "\x1f"


@dataclass(frozen=True)
class EndpointRow:
    host: str
    port: int
    security: str
    username: str


@dataclass(frozen=True, repr=False)
class NewConnection:
    """One mailbox to connect, validated, its secrets already sealed to its id (the
    caller chose the id: the seal contexts name it)."""

    id: str
    address: str
    name: str
    smtp: EndpointRow
    imap: EndpointRow
    auth: str
    sealed_smtp_password: bytes | None
    sealed_imap_password: bytes | None
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    sealed_oauth_client_secret: bytes | None = None
    sealed_refresh_token: bytes | None = None
    daily_send_limit: int | None = None
    signature: str = ""
    save_sent: bool = True
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Created:
    id: str
    address: str
    created_at: datetime


@dataclass(frozen=True)
class Due:
    """A connection leased to this worker: test it (``test_due``, at
    ``test_generation``) and/or refresh its DNS check (``dns_due``)."""

    mailbox_id: str
    account_id: str
    address: str
    status: str
    test_generation: int
    test_due: bool
    dns_due: bool


@dataclass(frozen=True)
class Recorded:
    """A test result that was recorded: the mailbox's status before and after."""

    mailbox_id: str
    account_id: str
    address: str
    old_status: str
    status: str
    finished_jobs: list[str]


@dataclass(frozen=True)
class JobItem:
    index: int
    mailbox_id: str
    address: str | None
    state: str
    error: str | None
    detail: str | None


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


class Connections(Repository):
    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.jobs = Jobs(db)
        self.webhooks = Webhooks(db)

    # ------------------------------------------------------------------ tenant side

    async def create(self, account_id: str, items: Sequence[NewConnection],
                     bulk: bool) -> tuple[Job, list[Created]]:
        """Record the mailboxes, their connections and one ``connect_email_users`` job in
        one transaction; all or nothing. 409 for an address the account already has
        (managed or connected; *bulk*: naming ``mailboxes[n].email``), 403 past the
        account's mailbox limit (migration 0012's trigger counts these rows too)."""
        scope.check_new(sorted({_domain_of(i.address) for i in items}))
        addresses = [i.address for i in items]
        async with self.db.tx() as conn:
            if await conn.fetchrow(Q.share_account, account_id) is None:
                raise NotFound("account")
            taken = {r["address"] for r in await conn.fetch(Q.conn_addresses_in_account,
                                                            account_id, addresses)}
            if taken:
                field = "mailboxes[{n}].email" if bulk else "email"
                raise Conflict("address_taken",
                               "An address is already an email user of this account.",
                               [f"{field.format(n=n)}: {a} is already an email user of "
                                "this account" for n, a in enumerate(addresses) if a in taken])
            job = await self.jobs.insert(conn, account_id, "connect_email_users",
                                         items[0].id if len(items) == 1 else None,
                                         [("mailbox", i.id, 1) for i in items])
            try:
                rows = await conn.fetch(
                    Q.conn_insert_mailboxes, [i.id for i in items], account_id,
                    [a.partition("@")[0] for a in addresses], addresses,
                    [i.name for i in items], [i.daily_send_limit for i in items],
                    [i.signature for i in items])
            except asyncpg.UniqueViolationError:
                raise Conflict("address_taken",
                               "An address is already an email user of this account.") from None
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == LIMIT_SQLSTATE:
                    raise _limit_exceeded(exc) from None
                raise
            await conn.execute(
                Q.conn_insert_connections, [i.id for i in items],
                [i.smtp.host for i in items], [i.smtp.port for i in items],
                [i.smtp.security for i in items], [i.smtp.username for i in items],
                [i.imap.host for i in items], [i.imap.port for i in items],
                [i.imap.security for i in items], [i.imap.username for i in items],
                [i.auth for i in items], [i.sealed_smtp_password for i in items],
                [i.sealed_imap_password for i in items], [i.oauth_token_url for i in items],
                [i.oauth_client_id for i in items],
                [i.sealed_oauth_client_secret for i in items],
                [i.sealed_refresh_token for i in items], [i.save_sent for i in items],
                [_TAG_SEP.join(i.tags) if i.tags else None for i in items])
            await conn.execute(Q.notify_connected)
        by_addr = {r["address"]: r for r in rows}
        return job, [Created(by_addr[a]["id"], a, by_addr[a]["created_at"]) for a in addresses]

    async def get(self, account_id: str, mailbox_id: str) -> asyncpg.Record:
        """The connection of a live connected mailbox of the account (settings and test
        state, no secret); 404 for anything else (another account's, a managed one,
        outside the restriction)."""
        if not ids.has_prefix(mailbox_id, "usr"):
            raise NotFound("email user")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.conn_get, account_id, mailbox_id)
        if row is None or not scope.allows(_domain_of(row["address"])):
            raise NotFound("email user")
        return row

    async def locked(self, conn: Any, account_id: str, mailbox_id: str) -> asyncpg.Record:
        """The connection row (sealed columns included), locked, within the caller's
        transaction; the same 404 as ``get``."""
        if not ids.has_prefix(mailbox_id, "usr"):
            raise NotFound("email user")
        row = await conn.fetchrow(Q.conn_lock, account_id, mailbox_id)
        if row is None or not scope.allows(_domain_of(row["address"])):
            raise NotFound("email user")
        return row  # type: ignore[no-any-return]

    async def update(self, account_id: str, mailbox_id: str,
                     new: NewConnection, token_changed: bool) -> Job:
        """Replace the settings and credentials (*new*: the merged result, secrets
        sealed) and test again: the mailbox is ``connecting`` and a job waits for the
        test of the new generation. *token_changed*: forget the cached access token."""
        async with self.db.tx() as conn:
            await self.locked(conn, account_id, mailbox_id)
            await conn.execute(
                Q.conn_update, mailbox_id, new.smtp.host, new.smtp.port, new.smtp.security,
                new.smtp.username, new.imap.host, new.imap.port, new.imap.security,
                new.imap.username, new.auth, new.sealed_smtp_password,
                new.sealed_imap_password, new.oauth_token_url, new.oauth_client_id,
                new.sealed_oauth_client_secret, new.sealed_refresh_token, token_changed,
                new.save_sent, list(new.tags))
            gen = await conn.fetchval(Q.conn_mailbox_retest, mailbox_id)
            job = await self.jobs.insert(conn, account_id, "connect_email_users", mailbox_id,
                                         [("mailbox", mailbox_id, int(gen))])
            await conn.execute(Q.notify_connected)
        return job

    async def job_items(self, job_id: str) -> list[JobItem]:
        """Every item of a connect job (the caller has read the job through the scoped
        ``Jobs.get``)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.conn_job_items, job_id)
        return [JobItem(r["seq"], r["object_id"], r["address"], r["state"], r["error"],
                        r["detail"]) for r in rows]

    # ------------------------------------------------------------------ worker side

    async def claim_due(self, owner: str, limit: int, lease_seconds: float,
                        dns_interval: float) -> list[Due]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.conn_claim_due, limit, owner, lease_seconds,
                                    dns_interval)
        return [Due(r["mailbox_id"], r["account_id"], r["address"], r["status"],
                    int(r["test_generation"]), bool(r["test_due"]), bool(r["dns_due"]))
                for r in rows]

    async def secrets(self, mailbox_id: str) -> asyncpg.Record | None:
        """The whole connection row of a live connected mailbox, sealed secrets
        included (for ``connected.credentials``; never rendered)."""
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(Q.conn_secrets, mailbox_id)

    async def store_access(self, mailbox_id: str, sealed_access: bytes, expires_at: datetime,
                           sealed_refresh: bytes | None, refresh_used: bytes) -> bool:
        async with self.pool.acquire() as conn:
            status = await conn.execute(Q.conn_store_access, mailbox_id, sealed_access,
                                        expires_at, sealed_refresh, refresh_used)
        return status.endswith(" 1")

    async def record_test(self, mailbox_id: str, generation: int, ok: bool,
                          reason: str | None, detail: str, sent_folder: str | None,
                          next_in: float) -> Recorded | None:
        """Record a test of *generation*; None when settings changed meanwhile (the
        result is stale: dropped, the newer test decides). Settles the mailbox's job
        items and queues the ``email_user.connected`` / ``email_user.connection_failed``
        webhook events in the same transaction."""
        async with self.db.tx() as conn:
            row = await conn.fetchrow(Q.conn_record_test, mailbox_id, generation, ok, reason,
                                      detail or None, sent_folder, next_in)
            if row is None:
                return None
            job_ids = sorted({r["job_id"] for r in await conn.fetch(Q.settle_job_items,
                                                                    [mailbox_id])})
            if job_ids:
                await conn.fetch(Q.conn_lock_jobs, job_ids)
            finished = [r["id"] for r in await conn.fetch(Q.refresh_jobs, job_ids)
                        if r["status"] in ("completed", "failed")] if job_ids else []
            rec = Recorded(row["id"], row["account_id"], row["address"], row["old_status"],
                           row["status"], finished)
            await self._events(conn, rec, reason, detail)
        return rec

    async def _events(self, conn: Any, rec: Recorded, reason: str | None,
                      detail: str) -> None:
        data: dict[str, Any] = {"email_user_id": rec.mailbox_id, "email": rec.address}
        if rec.status == "active" and rec.old_status != "active":
            event = "email_user.connected"
        elif rec.status == "failed" and rec.old_status == "active":
            event = "email_user.connection_failed"
            data |= {"reason": reason, "detail": detail}
        else:
            return
        eid = ids.new_id("evt")
        await self.webhooks.enqueue(conn, rec.account_id, event, eid,
                                    _payload(event, data, eid))

    async def failures(self, mailbox_id: str) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(Q.conn_failures, mailbox_id) or 0)

    async def release(self, mailbox_id: str, owner: str, retry_in: float) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.conn_release, mailbox_id, owner, retry_in)

    async def record_dns(self, mailbox_id: str, result: dict[str, Any], owner: str,
                         release: bool) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.conn_record_dns, mailbox_id, result)
            if release:
                await conn.execute(Q.conn_release_dns, mailbox_id, owner)

    async def report_failure(self, mailbox_id: str, reason: str, detail: str,
                             retest_in: float) -> bool:
        """An active mailbox failed in use (the mail service): failed, with the
        ``email_user.connection_failed`` event, tested again in *retest_in* seconds.
        False when it was not active (nothing changed)."""
        async with self.db.tx() as conn:
            row = await conn.fetchrow(Q.conn_report_failure, mailbox_id, reason, detail,
                                      retest_in)
            if row is None:
                return False
            await self._events(conn, Recorded(row["id"], row["account_id"], row["address"],
                                              "active", "failed", []), reason, detail)
            await conn.execute(Q.notify_connected)
        return True


def _payload(event: str, data: dict[str, Any], eid: str) -> dict[str, Any]:
    # The same body as mailforge.webhooks.payload (which imports the store).
    return {"id": eid, "type": event,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")
            .replace("+00:00", "Z"), "data": data}

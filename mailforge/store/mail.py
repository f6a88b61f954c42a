"""Mail through the API, its store side: the mailbox a request sends or reads as
(``Senders``), daily send counts and sending settings (``Sending``), and the inbound
scanner's bookkeeping (``InboundScans``).

A ``Sender`` is found only by a query scoped by account and by the token's domain
restriction (``Senders.get``): everything reached through a mailbox id, or through a
message id (which carries one), passes there, so holding a ``Sender`` is the proof that
the caller may act as that mailbox. The policy service's and the scanner's queries are
the mail server's own questions (a SASL login, the watched mailboxes of this mail host),
not a tenant's, and are scoped by what asks them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..errors import NotFound
from ..mail.limits import Warmup
from .db import Repository
from .queries import Q


def restriction(domains: Collection[str] | None) -> list[str] | None:
    """A token's domain restriction as the ``text[]`` parameter the queries take (NULL:
    unrestricted)."""
    return None if domains is None else sorted(domains)


@dataclass(frozen=True)
class Sender:
    """A live mailbox as mail through the API sees it: who it is, its sending settings
    and what it sent on the day it was read for."""

    id: str
    account_id: str
    # None for a connected mailbox (issue 12): no domain row of mailforge's.
    domain_id: str | None
    domain: str  # the domain's ASCII name (a connected mailbox's: its address's)
    address: str
    name: str
    signature: str
    daily_send_limit: int | None
    suspended: bool
    status: str
    warmup: Warmup | None
    sent_today: int
    # 'managed' (this host's Postfix/Dovecot) or 'connected' (its own provider's).
    kind: str = "managed"
    # A connected mailbox's Sent folder (SPECIAL-USE, found by its test) and whether
    # mailforge appends a copy of what it sends there.
    sent_folder: str | None = None
    save_sent: bool = False

    @property
    def active(self) -> bool:
        return self.status == "active" and not self.suspended

    @classmethod
    def from_row(cls, r: Any) -> Sender:
        warmup = None if r["warmup_start"] is None else Warmup(
            int(r["warmup_start"]), int(r["warmup_days"]), r["warmup_started_on"])
        return cls(id=r["id"], account_id=r["account_id"], domain_id=r["domain_id"],
                   domain=r["domain_name"], address=r["address"], name=r["name"] or "",
                   signature=r["signature"] or "", daily_send_limit=r["daily_send_limit"],
                   suspended=bool(r["suspended"]), status=r["status"], warmup=warmup,
                   sent_today=int(r["sent_today"]), kind=r["kind"],
                   sent_folder=r["sent_folder"], save_sent=bool(r["save_sent"]))


@dataclass(frozen=True)
class SendingChange:
    """A change of a mailbox's sending settings; a field not ``set_*`` stays as it is.
    ``daily_send_limit`` None: the server's default; ``warmup`` None: no warm-up."""

    set_limit: bool = False
    daily_send_limit: int | None = None
    set_warmup: bool = False
    warmup: Warmup | None = None


class Senders(Repository):
    async def get(self, account_id: str, mailbox_id: str, domains: Collection[str] | None,
                  day: date, what: str = "email user") -> Sender:
        """The live mailbox *mailbox_id* of the account within the token's domain
        restriction, with its count of *day*. Another tenant's mailbox, a tombstone and
        a mailbox outside the restriction are the same 404 (*what* names it). A
        connected mailbox is found too (``kind``; its domain: its address's)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.mail_sender_by_id, mailbox_id, account_id,
                                      restriction(domains), day)
        if row is None:
            raise NotFound(what)
        return Sender.from_row(row)

    async def by_login(self, address: str, day: date) -> Sender | None:
        """The live managed mailbox a submission's SASL login acts as (the policy
        service); never a connected one."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.mail_sender_by_address, address, day)
        return None if row is None else Sender.from_row(row)


class Sending(Repository):
    async def sent_on(self, sender: Sender, day: date) -> int:
        """What *sender* (found by ``Senders.get``) sent on *day*, read again."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(Q.mail_sent_on_day, sender.id, day,
                                           sender.account_id))

    async def count(self, sender: Sender, day: date, limit: int) -> int | None:
        """Count one more message of *sender* on *day* while under *limit*; None when
        the limit is reached (atomic: concurrent submissions cannot overshoot)."""
        async with self.pool.acquire() as conn:
            got = await conn.fetchval(Q.mail_count_send, sender.id, day, sender.domain_id,
                                      limit)
        return None if got is None else int(got)

    async def uncount(self, sender: Sender, day: date) -> None:
        """One message of *sender* back off *day*'s count (it was counted, then the
        send was refused)."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.mail_uncount_send, sender.id, day)

    async def change(self, account_id: str, mailbox_id: str, domains: Collection[str] | None,
                     ch: SendingChange) -> None:
        """Apply *ch* to mailbox *mailbox_id* of the account within the restriction, in
        one transaction; 404 when it is not (or no longer) there."""
        allowed = restriction(domains)
        async with self.db.tx() as conn:
            if await conn.fetchval(Q.mail_lock_sender, account_id, mailbox_id, allowed) is None:
                raise NotFound("email user")
            if ch.set_limit:
                await conn.execute(Q.mail_set_daily_limit, account_id, mailbox_id,
                                   ch.daily_send_limit, allowed)
            if ch.set_warmup:
                if ch.warmup is None:
                    await conn.execute(Q.mail_clear_warmup, account_id, mailbox_id, allowed)
                else:
                    w = ch.warmup
                    await conn.execute(Q.mail_set_warmup, account_id, mailbox_id,
                                       w.start_limit, w.days, w.started_on, allowed)


@dataclass(frozen=True)
class Watched:
    """A mailbox the scanner looks at: where its last scan stopped (``last_uid`` -1:
    take a baseline first)."""

    mailbox_id: str
    address: str
    account_id: str
    domain_id: str | None  # None: a connected mailbox
    uidvalidity: int
    last_uid: int

    @classmethod
    def from_row(cls, r: Any) -> Watched:
        return cls(r["mailbox_id"], r["address"], r["account_id"], r["domain_id"],
                   int(r["uidvalidity"] or 0), int(r["last_uid"]))


class InboundScans(Repository):
    """Which mailboxes of this mail host the scanner looks at, and how far it got."""

    async def watch(self, recipient: str, seconds: float) -> None:
        """The policy service saw *recipient* at RCPT: scan its INBOX for a while."""
        async with self.pool.acquire() as conn:
            await conn.fetch(Q.mail_watch_recipient, recipient, seconds)

    async def by_address(self, addresses: Sequence[str]) -> list[Watched]:
        """The active mailboxes of this mail host among *addresses* (Dovecot reported
        deliveries to them), with where their last scan stopped."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.mail_scan_by_address, self.db.mail_host,
                                    list(addresses))
        return [Watched.from_row(r) for r in rows]

    async def sweep_page(self, after: str, limit: int) -> list[Watched]:
        """The next *limit* active mailboxes of this host after id *after* (the sweep)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.mail_sweep_page, self.db.mail_host, after, limit)
        return [Watched.from_row(r) for r in rows]

    async def connected_page(self, after: str, limit: int) -> list[Watched]:
        """The next *limit* active connected mailboxes after id *after* (any host: they
        are no mail host's), for the inbound poll of connected mailboxes."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.mail_connected_page, after, limit)
        return [Watched.from_row(r) for r in rows]

    async def expire_evidence(self) -> None:
        """Drop the sent-message evidence past its time (once per sweep)."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.mail_sent_expire)

    async def watched(self, limit: int, skip: Sequence[str]) -> list[Watched]:
        """Mailboxes of this mail host to scan now (recipients just seen first), without
        those in *skip* (backing off after failed scans)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.mail_watched, self.db.mail_host, limit, list(skip))
        return [Watched.from_row(r) for r in rows]

    async def record(self, mailbox_id: str, uidvalidity: int, last_uid: int) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.mail_scan_record, mailbox_id, uidvalidity, last_uid)

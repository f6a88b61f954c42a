"""Sending reputation in the store: bounce and complaint events per domain, the counts
over a window, and the evidence a report must match (the Message-IDs of the messages
mailforge sent). The rules (what counts, what blocks) are ``mailforge.reputation``'s.

Most methods run on a connection the caller passes (``conn``), inside its transaction:
the send path, the inbound scanner and the submission milter each record evidence in
the transaction of their own work, and the milter holds only a pool. They take domain
and mailbox ids the caller has already resolved within its scope; the counts for
tenants are read through ``Domains`` (scoped by account and domain restriction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .db import Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn


@dataclass(frozen=True)
class ReputationCounts:
    """Messages sent, bounces and complaints of a domain over the window."""

    sent: int
    bounces: int
    complaints: int

    @classmethod
    def of(cls, row: Any) -> ReputationCounts:
        """From a row carrying ``sent``, ``bounces`` and ``complaints``."""
        return cls(int(row["sent"]), int(row["bounces"]), int(row["complaints"]))


@dataclass(frozen=True)
class SentEvidence:
    """A sent message a report may be about: who sent it, and to whom (None: unknown)."""

    domain_id: str
    mailbox_id: str | None
    recipients: tuple[str, ...] | None


class Reputations(Repository):
    async def counts_of(self, domain_id: str, days: int) -> ReputationCounts:
        async with self.pool.acquire() as conn:
            return await self.counts(conn, domain_id, days)

    @staticmethod
    async def counts(conn: Conn, domain_id: str, days: int) -> ReputationCounts:
        row = await conn.fetchrow(Q.mail_reputation_counts, domain_id, days)
        return ReputationCounts.of(row)

    @staticmethod
    async def record_event(conn: Conn, domain_id: str, mailbox_id: str | None, kind: str,
                           ref: str) -> bool:
        """A bounce or complaint, once per *ref*; True when it was new."""
        return await conn.fetchval(Q.mail_reputation_record, domain_id, mailbox_id, kind,
                                   ref) is not None

    @staticmethod
    async def record_sent(conn: Conn, domain_id: str, message_id: str,
                          mailbox_id: str | None, recipients: Sequence[str] | None,
                          days: int) -> bool:
        """Keep *message_id* (without <>) as sent from the domain for *days*; True when
        new (the first record of a Message-ID for a domain stands)."""
        return await conn.fetchval(Q.mail_sent_record, domain_id, message_id, mailbox_id,
                                   None if recipients is None else list(recipients),
                                   days) is not None

    @staticmethod
    async def forget_sent(conn: Conn, domain_id: str, message_id: str) -> None:
        await conn.execute(Q.mail_sent_forget, domain_id, message_id)

    @staticmethod
    async def submitted_sender(conn: Conn, address: str,
                               from_domain: str) -> tuple[str, str] | None:
        """(domain id, mailbox id) when *address* is a live mailbox and *from_domain* a
        live domain of the same account; None otherwise."""
        row = await conn.fetchrow(Q.mail_submitted_sender, address, from_domain)
        return None if row is None else (row["domain_id"], row["mailbox_id"])

    @staticmethod
    async def sent_evidence(conn: Conn, message_id: str, domain_id: str,
                            mailbox_id: str) -> SentEvidence | None:
        """The unexpired sent message *message_id* from *domain_id* (preferred) or by
        *mailbox_id*, if any."""
        row = await conn.fetchrow(Q.mail_sent_evidence, message_id, domain_id, mailbox_id)
        if row is None:
            return None
        rcpts = row["recipients"]
        return SentEvidence(row["domain_id"], row["mailbox_id"],
                            None if rcpts is None else tuple(rcpts))

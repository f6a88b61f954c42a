"""Per-domain sending reputation over a sliding window: messages sent (counted by the
policy service), bounces (DSNs that came back to the domain's mailboxes, seen by the
inbound scanner, and Postfix's own bounce reports delivered to them) and complaints
(ARF feedback reports received), each counted only with evidence that it is about a
message mailforge sent (see ``judge``). The status follows configurable rate
thresholds; a ``blocked`` domain refuses new mailboxes and API sends with 409
``domain_reputation_blocked``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import ReputationConfig
from .errors import Conflict
from .log import get
from .mail import master, reports
from .store.reputation import ReputationCounts, Reputations

log = get(__name__)


@dataclass(frozen=True)
class Reputation:
    sent: int
    bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float
    status: str
    window_days: int

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "window_days": self.window_days, "sent": self.sent,
                "bounces": self.bounces, "complaints": self.complaints,
                "bounce_rate": round(self.bounce_rate, 4),
                "complaint_rate": round(self.complaint_rate, 4)}


def assess(sent: int, bounces: int, complaints: int, cfg: ReputationConfig) -> Reputation:
    """Pure: the status for these counts. Rates are over max(sent, min_volume); a block
    also needs at least ``block_min_events`` bounces (or complaints), so that one
    report, even a true one, never blocks a domain."""
    base = max(sent, cfg.min_volume, 1)
    br, cr = bounces / base, complaints / base
    least = cfg.block_min_events
    if (br >= cfg.block_bounce_rate and bounces >= least) or \
            (cr >= cfg.block_complaint_rate and complaints >= least):
        status = "blocked"
    elif br >= cfg.watch_bounce_rate or cr >= cfg.watch_complaint_rate:
        status = "watch"
    else:
        status = "healthy"
    return Reputation(sent, bounces, complaints, br, cr, status, cfg.window_days)


def of_counts(counts: ReputationCounts, cfg: ReputationConfig) -> Reputation:
    return assess(counts.sent, counts.bounces, counts.complaints, cfg)


async def for_domain(conn: Any, domain_id: str, cfg: ReputationConfig) -> Reputation:
    return of_counts(await Reputations.counts(conn, domain_id, cfg.window_days), cfg)


def check_not_blocked(rep: Reputation, name: str) -> None:
    """409 ``domain_reputation_blocked`` when *rep* (of domain *name*) is blocked."""
    if rep.status == "blocked":
        raise Conflict("domain_reputation_blocked",
                       f"Domain {name} is blocked by its sending reputation "
                       f"({rep.bounces} bounces, {rep.complaints} complaints in "
                       f"{rep.window_days} days).", extra={"reputation": rep.as_json()})


async def require_not_blocked(conn: Any, domain_id: str, name: str,
                              cfg: ReputationConfig) -> None:
    check_not_blocked(await for_domain(conn, domain_id, cfg), name)


async def record(conn: Any, domain_id: str, mailbox_id: str | None, kind: str,
                 ref: str) -> bool:
    """Record a bounce or complaint once per *ref*; True when it was new."""
    return await Reputations.record_event(conn, domain_id, mailbox_id, kind, ref)


# ------------------------------------------------------------------ evidence
#
# A DSN or ARF report is a claim anyone can send to port 25. It counts only when it is
# about a message mailforge sent: the Message-IDs of sent messages are recorded (API
# sends here, SMTP submissions through record_submitted) and a report must name one of
# them, sent from the domain (or by the mailbox) that received the report and, for a
# bounce, to the recipient that failed. Message-IDs mailforge makes carry 128 random
# bits, so they cannot be guessed; whoever received a message knows its id, which is
# why each sent message counts once as a complaint and once per recipient as a bounce,
# and a block needs several (ReputationConfig.block_min_events).


@dataclass(frozen=True)
class Verdict:
    """A report judged against the sent messages: counted (True) with the domain and
    mailbox charged, or ignored (False) with the reason."""

    counted: bool
    reason: str
    domain_id: str | None = None
    mailbox_id: str | None = None
    refs: tuple[str, ...] = ()


async def record_sent(conn: Any, domain_id: str, mailbox_id: str | None, message_id: str,
                      recipients: Sequence[str] | None, days: int) -> bool:
    """Keep *message_id* (with or without <>) as sent from the domain; True when new."""
    mid = reports.normal_msgid(message_id if message_id.startswith("<")
                               else f"<{message_id}>")
    if mid is None:
        return False
    rcpts = None if recipients is None else sorted({r.strip().lower() for r in recipients})
    return await Reputations.record_sent(conn, domain_id, mid, mailbox_id, rcpts, days)


async def forget_sent(conn: Any, domain_id: str, message_id: str) -> None:
    mid = reports.normal_msgid(message_id)
    if mid is not None:
        await Reputations.forget_sent(conn, domain_id, mid)


async def record_submitted(conn_or_pool: Any, login: str, from_addr: str, message_id: str,
                           recipients: Sequence[str] | None = None,
                           days: int = 30) -> bool:
    """Record a message submitted over SMTP (for the submission milter): *login* is the
    authenticated mailbox (a Dovecot master login ``address*master`` stands for the
    address), *from_addr* the address of the From header, *message_id* its Message-ID.
    Recorded only when the From domain is a live domain of the login's own account;
    True when a record was made. *conn_or_pool*: an asyncpg connection or pool."""
    address = master.mailbox_of(login)
    from_domain = from_addr.strip().strip("<>").rpartition("@")[2].lower().rstrip(".")
    if not address or "@" not in address or not from_domain:
        return False
    if hasattr(conn_or_pool, "acquire"):
        async with conn_or_pool.acquire() as conn:
            return await record_submitted(conn, login, from_addr, message_id,
                                          recipients, days)
    sender = await Reputations.submitted_sender(conn_or_pool, address, from_domain)
    if sender is None:
        return False
    return await record_sent(conn_or_pool, sender[0], sender[1], message_id, recipients,
                             days)


async def judge(conn: Any, domain_id: str, mailbox_id: str,
                report: reports.Report) -> Verdict:
    """Whether *report*, received by *mailbox_id* of *domain_id*, is about a message
    we sent; the refs to record (idempotent: one per message and kind, one per
    recipient for bounces)."""
    if report.message_id is None:
        return Verdict(False, "no Message-ID of the original message")
    sent = await Reputations.sent_evidence(conn, report.message_id, domain_id, mailbox_id)
    if sent is None:
        return Verdict(False, "not about a message sent from this domain")
    mid = report.message_id
    if report.kind == "complaint":
        refs: tuple[str, ...] = (f"complaint:{mid}",)
    elif sent.recipients is None:
        refs = (f"bounce:{mid}",)
    else:
        sent_to = set(sent.recipients)
        refs = tuple(f"bounce:{mid}:{r}" for r in report.recipients if r in sent_to)
        if not refs:
            return Verdict(False, "the failed recipient is not one the message was sent to")
    return Verdict(True, "about a message we sent", sent.domain_id, sent.mailbox_id, refs)


async def count_report(conn: Any, domain_id: str, mailbox_id: str,
                       report: reports.Report, where: str) -> Verdict:
    """Judge *report* and record what counts; an ignored report is logged (info)."""
    verdict = await judge(conn, domain_id, mailbox_id, report)
    if not verdict.counted or verdict.domain_id is None:
        log.info("report ignored", kind=report.kind, reason=verdict.reason,
                 mailbox_id=mailbox_id, at=where)
        return verdict
    for ref in verdict.refs:
        await record(conn, verdict.domain_id, verdict.mailbox_id, report.kind, ref)
    return verdict

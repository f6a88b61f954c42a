"""Per-domain sending reputation over a sliding window: messages sent (counted by the
policy service), bounces (DSNs that came back to the domain's mailboxes, seen by the
inbound scanner, and Postfix's own bounce reports delivered to them) and complaints
(ARF feedback reports received). The status follows configurable rate thresholds;
a ``blocked`` domain refuses new mailboxes and API sends with 409
``domain_reputation_blocked``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from .config import ReputationConfig
from .errors import Conflict
from .store.queries import Q


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
    """Pure: the status for these counts. Rates are over max(sent, min_volume)."""
    base = max(sent, cfg.min_volume, 1)
    br, cr = bounces / base, complaints / base
    if br >= cfg.block_bounce_rate or cr >= cfg.block_complaint_rate:
        status = "blocked"
    elif br >= cfg.watch_bounce_rate or cr >= cfg.watch_complaint_rate:
        status = "watch"
    else:
        status = "healthy"
    return Reputation(sent, bounces, complaints, br, cr, status, cfg.window_days)


async def for_domain(conn: Any, domain_id: str, cfg: ReputationConfig) -> Reputation:
    row = await conn.fetchrow(Q.mail_reputation_counts, domain_id, cfg.window_days)
    return assess(int(row["sent"]), int(row["bounces"]), int(row["complaints"]), cfg)


async def require_not_blocked(conn: Any, domain_id: str, name: str,
                              cfg: ReputationConfig) -> None:
    rep = await for_domain(conn, domain_id, cfg)
    if rep.status == "blocked":
        raise Conflict("domain_reputation_blocked",
                       f"Domain {name} is blocked by its sending reputation "
                       f"({rep.bounces} bounces, {rep.complaints} complaints in "
                       f"{rep.window_days} days).", extra={"reputation": rep.as_json()})


async def record(conn: Any, domain_id: str, mailbox_id: str | None, kind: str,
                 ref: str) -> bool:
    """Record a bounce or complaint once per *ref*; True when it was new."""
    return await conn.fetchval(Q.mail_reputation_record, domain_id, mailbox_id, kind,
                               ref) is not None


async def domain_json(pool: asyncpg.Pool, domain_id: str,
                      cfg: ReputationConfig) -> dict[str, Any]:
    """The ``reputation`` object shown on the domain resource."""
    async with pool.acquire() as conn:
        return (await for_domain(conn, domain_id, cfg)).as_json()

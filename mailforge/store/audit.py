"""The audit log: append an event, read an account's events newest first.

The table is append-only at the database level (triggers refuse UPDATE, DELETE and
TRUNCATE), so nothing the application does can rewrite what was recorded. Events are
read by the account they were about; an account's events are never another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import ids
from .db import Repository
from .queries import Q


@dataclass(frozen=True)
class AuditEvent:
    account_id: str
    actor_account_id: str
    token_id: str
    action: str
    method: str
    route: str
    resource_id: str | None
    status: int
    client_addr: str | None
    request_id: str | None
    summary: dict[str, Any]


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    token_id: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class AuditRecord:
    """A recorded event as read back; ``seq`` orders the log (newest is highest)."""

    seq: int
    id: str
    at: datetime
    event: AuditEvent


class Audit(Repository):
    async def record(self, event: AuditEvent) -> str:
        eid = ids.new_id("evt")
        async with self.pool.acquire() as conn:
            await conn.execute(Q.insert_audit, eid, event.account_id,
                               event.actor_account_id, event.token_id, event.action,
                               event.method, event.route, event.resource_id, event.status,
                               event.client_addr, event.request_id, event.summary)
        return eid

    async def list(self, account_id: str, flt: AuditFilter, before_seq: int | None,
                   limit: int) -> list[AuditRecord]:
        """The account's events older than *before_seq* (None: from the newest)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.list_audit, account_id, before_seq, flt.action,
                                    flt.token_id, flt.resource_id, flt.since, flt.until,
                                    limit)
        return [AuditRecord(seq=r["seq"], id=r["id"], at=r["at"], event=AuditEvent(
            account_id=r["account_id"], actor_account_id=r["actor_account_id"],
            token_id=r["token_id"], action=r["action"], method=r["method"],
            route=r["route"], resource_id=r["resource_id"], status=r["status"],
            client_addr=r["client_addr"], request_id=r["request_id"],
            summary=r["summary"])) for r in rows]

"""Store functions for the audit log: append an event, read an account's events.

The table is append-only at the database level (triggers refuse UPDATE, DELETE and
TRUNCATE), so nothing the application does can rewrite what was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import ids
from .queries import Q
from .store import Store


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


async def record(store: Store, event: AuditEvent) -> str:
    eid = ids.new_id("evt")
    async with store.pool.acquire() as conn:
        await conn.execute(Q.insert_audit, eid, event.account_id, event.actor_account_id,
                           event.token_id, event.action, event.method, event.route,
                           event.resource_id, event.status, event.client_addr,
                           event.request_id, event.summary)
    return eid


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    token_id: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(store: Store, account_id: str, flt: AuditFilter, cursor: int | None,
                      limit: int) -> list[dict[str, Any]]:
    async with store.pool.acquire() as conn:
        rows = await conn.fetch(Q.list_audit, account_id, cursor, flt.action, flt.token_id,
                                flt.resource_id, flt.since, flt.until, limit)
    return [dict(r) for r in rows]

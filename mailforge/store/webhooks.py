"""Event webhooks, their store side: registrations (account-wide: every query a tenant
reaches takes the account id) and the persisted delivery queue the dispatcher drains
(claimed under a lease, so a crash only means a delivery is made again)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from .db import Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn


@dataclass(frozen=True)
class Webhook:
    id: str
    account_id: str
    url: str
    events: tuple[str, ...]
    created_at: datetime

    @classmethod
    def from_row(cls, r: Any) -> Webhook:
        return cls(r["id"], r["account_id"], r["url"], tuple(r["events"]), r["created_at"])


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: str
    event: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class DueDelivery:
    """A delivery claimed for an attempt, with what it takes to make it."""

    id: int
    webhook_id: str
    event_id: str
    event: str
    payload: str  # the JSON text, signed and sent as it is
    attempts: int
    url: str
    sealed_secret: bytes
    account_id: str


@dataclass(frozen=True)
class FinishedJob:
    id: str
    account_id: str
    type: str
    status: str
    resource_id: str | None
    message: str | None


class Webhooks(Repository):
    # ------------------------------------------------------------ registrations

    async def create(self, webhook_id: str, account_id: str, url: str,
                     events: Sequence[str], sealed_secret: bytes) -> Webhook:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.webhook_insert, webhook_id, account_id, url,
                                      sorted(set(events)), sealed_secret)
        return Webhook.from_row(row)

    async def of_account(self, account_id: str, limit: int, offset: int,
                         after: tuple[datetime, str] | None
                         ) -> tuple[list[Webhook], int, bool]:
        """A page of the account's webhooks, oldest first (after the keyset *after*
        (created_at, id) when given, else from *offset*), how many it has, and whether
        more follow the page."""
        at, wid = after if after is not None else (None, None)
        async with self.pool.acquire() as conn:
            # One row more than the page tells whether another page follows.
            rows = await conn.fetch(Q.webhook_list, account_id, limit + 1, at, wid,
                                    0 if after is not None else offset)
            total = await conn.fetchval(Q.webhook_count, account_id)
        return [Webhook.from_row(r) for r in rows[:limit]], int(total), len(rows) > limit

    async def get(self, account_id: str, webhook_id: str) -> Webhook:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.webhook_get, account_id, webhook_id)
        if row is None:
            raise NotFound("webhook")
        return Webhook.from_row(row)

    async def delete(self, account_id: str, webhook_id: str) -> None:
        async with self.pool.acquire() as conn:
            gone = await conn.fetchval(Q.webhook_delete, account_id, webhook_id)
        if gone is None:
            raise NotFound("webhook")

    async def deliveries(self, account_id: str, webhook_id: str, limit: int, offset: int,
                         before: int | None) -> tuple[list[Delivery], int, bool]:
        """A page of a webhook's deliveries, newest first (below delivery *before* when
        given, else from *offset*), how many it has and whether more follow the page;
        404 for no such webhook."""
        await self.get(account_id, webhook_id)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.webhook_deliveries_of, account_id, webhook_id,
                                    limit + 1, before, 0 if before is not None else offset)
            total = await conn.fetchval(Q.webhook_deliveries_count, account_id, webhook_id)
        return ([Delivery(**dict(r)) for r in rows[:limit]], int(total),
                len(rows) > limit)

    # ------------------------------------------------------------ the delivery queue

    async def enqueue(self, conn: Conn, account_id: str, event: str, event_id: str,
                      payload: dict[str, Any]) -> None:
        """A delivery of *payload* for every webhook of the account subscribed to
        *event*, once per event id, on the caller's transaction (the event commits with
        what it reports)."""
        await conn.execute(Q.webhook_enqueue, account_id, event, event_id, payload)

    async def claim_due(self, batch: int, lease_seconds: float) -> list[DueDelivery]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.webhook_claim_due, batch, lease_seconds)
        return [DueDelivery(r["id"], r["webhook_id"], r["event_id"], r["event"],
                            r["payload"], r["attempts"], r["url"], bytes(r["sealed_secret"]),
                            r["account_id"]) for r in rows]

    async def delivered(self, delivery_id: int, status: int) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.webhook_delivered, delivery_id, status)

    async def failed(self, delivery_id: int, status: int | None, error: str,
                     retry_in: float, max_attempts: int) -> None:
        """A failed attempt: try again in *retry_in* seconds, or give up after
        *max_attempts*."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.webhook_retry, delivery_id, status, error, retry_in,
                               max_attempts)

    async def finished_jobs(self, job_ids: Sequence[str]) -> list[FinishedJob]:
        """What the events of jobs the engine just finished say (jobs of any account:
        each event goes to its own account's webhooks)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.jobs_finished_info, list(job_ids))
        return [FinishedJob(r["id"], r["account_id"], r["type"], r["status"],
                            r["resource_id"], r["message"]) for r in rows]

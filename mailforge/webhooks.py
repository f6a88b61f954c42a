"""Event webhooks: new inbound mail, bounces, complaints and job completion.

Events are written to a persisted queue (``webhook_deliveries``, one row per webhook
and event) in PostgreSQL; a delivery loop POSTs them, signed with
``X-Mailforge-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` under the
webhook's secret, and retries failures with capped exponential backoff and jitter.
A claim is a lease (the next attempt time pushed forward), so a crash mid-delivery
only means the event is delivered again: receivers deduplicate on the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg

from . import ids, netguard
from .config import WebhookConfig
from .log import get
from .secretbox import SecretBox
from .store.db import Database
from .store.webhooks import DueDelivery, Webhooks

if TYPE_CHECKING:
    from .store.db import Conn

log = get(__name__)

EVENTS = ("message.received", "message.bounced", "message.complained", "job.completed",
          "job.failed",
          # Connected mailboxes (issue 12): a test or a use succeeded after none had,
          # or an active one stopped logging in (connected/worker.py).
          "email_user.connected", "email_user.connection_failed")
LEASE_SECONDS = 60.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def backoff(attempts: int, cfg: WebhookConfig) -> float:
    delay = float(min(cfg.retry_max_seconds,
                      cfg.retry_base_seconds * 2.0 ** max(0, attempts - 1)))
    return delay * (0.8 + 0.4 * random.random())


def secret_context(webhook_id: str) -> str:
    return f"webhook:{webhook_id}"


def new_webhook_id() -> str:
    return ids.new_id("evt").replace("evt_", "whk_", 1)


def payload(event: str, data: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The JSON body every receiver of *event* gets."""
    return {"id": event_id, "type": event,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "data": data}


async def enqueue(store: Webhooks, conn: Conn, account_id: str, event: str,
                  data: dict[str, Any], event_id: str | None = None) -> str:
    """Queue *event* for every webhook of the account subscribed to it (idempotent per
    event id), on the caller's transaction."""
    eid = event_id or ids.new_id("evt")
    await store.enqueue(conn, account_id, event, eid, payload(event, data, eid))
    return eid


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox, cfg: WebhookConfig,
                 guard: netguard.Guard | None = None) -> None:
        self.store = Webhooks(Database(pool))
        self.box = box
        self.cfg = cfg
        # Receivers are tenant-given: every delivery goes through the outbound guard.
        self.guard = guard if guard is not None else netguard.Guard()
        self._wake = asyncio.Event()
        self.delivered = 0

    def wake(self) -> None:
        self._wake.set()

    async def on_jobs_finished(self, job_ids: Sequence[str]) -> None:
        """Engine callback: a webhook event per finished job."""
        jobs = await self.store.finished_jobs(job_ids)
        async with self.store.db.tx() as conn:
            for j in jobs:
                event = "job.completed" if j.status == "completed" else "job.failed"
                await enqueue(self.store, conn, j.account_id, event,
                              {"job_id": j.id, "type": j.type, "status": j.status,
                               "resource_id": j.resource_id, "message": j.message},
                              event_id=f"evt_job_{j.id}")
        self.wake()

    async def run(self, stop: asyncio.Event) -> None:
        async with self.session() as session:
            while not stop.is_set():
                try:
                    n = await self.run_once(session)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("webhook pass failed", error=str(exc))
                    n = 0
                if n:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval)
                self._wake.clear()

    def session(self) -> aiohttp.ClientSession:
        """The HTTP client for deliveries: names resolved through the guard (the
        connection goes to the checked address), no proxy from the environment, no
        cookies kept between receivers."""
        connector = aiohttp.TCPConnector(resolver=self.guard.resolver(),
                                         limit_per_host=4)
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
                                     connector=connector, trust_env=False,
                                     cookie_jar=aiohttp.DummyCookieJar())

    async def run_once(self, session: aiohttp.ClientSession, batch: int = 20) -> int:
        rows = await self.store.claim_due(batch, LEASE_SECONDS)
        if rows:
            await asyncio.gather(*(self._deliver(session, r) for r in rows))
        return len(rows)

    async def _deliver(self, session: aiohttp.ClientSession, d: DueDelivery) -> None:
        body = d.payload.encode()
        secret = self.box.open(d.sealed_secret, secret_context(d.webhook_id)).decode()
        headers = {"Content-Type": "application/json", "User-Agent": "mailforge-webhooks/1",
                   "X-Mailforge-Event": d.event, "X-Mailforge-Event-Id": d.event_id,
                   "X-Mailforge-Signature": sign(secret, body)}
        status, error = await self.post(session, d.url, body, headers)
        if status is not None and 200 <= status < 300:
            await self.store.delivered(d.id, status)
            self.delivered += 1
        else:
            err = error or f"HTTP {status}"
            await self.store.failed(d.id, status, err, backoff(d.attempts, self.cfg),
                                    self.cfg.max_attempts)
            log.info("webhook delivery failed", webhook_id=d.webhook_id,
                     event_id=d.event_id, attempts=d.attempts, error=err)

    async def post(self, session: aiohttp.ClientSession, url: str, body: bytes,
                   headers: dict[str, str]) -> tuple[int | None, str | None]:
        """POST one delivery: (HTTP status, None) or (None, error). A destination the
        guard refuses gives only ``netguard.BLOCKED_TEXT``: the record a tenant reads
        must not tell what answers (or not) on an address it may not reach. Redirects
        are not followed (a 3xx is a failed delivery)."""
        try:
            self.guard.check_url(url)
            async with session.post(url, data=body, headers=headers,
                                    allow_redirects=False) as resp:
                # Only the status matters; a receiver's body is never read in full.
                await resp.content.read(4096)
                return resp.status, None
        except netguard.Blocked:
            return None, netguard.BLOCKED_TEXT
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, netguard.Blocked) or \
                    isinstance(exc.__cause__, netguard.Blocked):
                return None, netguard.BLOCKED_TEXT
            return None, type(exc).__name__
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return None, type(exc).__name__

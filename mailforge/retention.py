"""Purging deleted mailboxes whose retention period is over.

A deleted mailbox is a tombstone row plus its mail kept by the backend in a retention
area, restorable until ``purge_after``. Once that passes, the engine destroys the
retained mail through the backend (if it keeps any) and then the row, in that order:
a crash in between leaves the row, and the next run repeats the idempotent purge.

Retained mail is found by the mailbox id, never by its address (a later mailbox of the
same name must never see it). A tombstone whose domain is deleted goes with the domain
row; the backend destroys that domain's retained mail, with its live mail, when it
converges the deletion, before the row (and so the name) is released.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .log import get
from .store.store import Store

log = get(__name__)


@runtime_checkable
class RetainingBackend(Protocol):
    """A backend that keeps deleted mailboxes' mail for a while."""

    async def purge_retained(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Destroy the retained mail of (domain, local part, mailbox id): found by the id
        (the local part only names retention written before homes were keyed by id)."""


class RetentionPurger:
    def __init__(self, store: Store, backend: object, interval: float = 60.0,
                 batch: int = 500) -> None:
        self.store = store
        self.backend = backend
        self.interval = interval
        self.batch = batch
        self._next = 0.0

    async def maybe_run(self) -> int:
        """Purge one batch if the interval has passed; returns how many were purged."""
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + self.interval
        return await self.run()

    async def run(self) -> int:
        rows = await self.store.mailboxes.expired_tombstones(self.batch)
        if not rows:
            return 0
        if isinstance(self.backend, RetainingBackend):
            await self.backend.purge_retained(rows)
        purged = await self.store.mailboxes.purge_tombstones([mid for _, _, mid in rows])
        log.info("deleted mailboxes purged", count=purged)
        return purged

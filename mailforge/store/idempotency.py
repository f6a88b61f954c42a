"""Idempotency keys: the stored state of each ``Idempotency-Key`` of an account (the
claim of the request handling it, under a lease; the job it created; its first answer,
sealed). The rules that use them live in the idempotency service; this is their
storage, every query keyed by account."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .db import Repository
from .jobs import IDEMPOTENCY
from .queries import Q


@dataclass(frozen=True)
class IdempotencyClaim:
    """The stored state of an Idempotency-Key: the first answer once recorded (status
    non-zero), else who handles it, whether its lease ran out, and the job it created."""

    request_hash: bytes
    status: int
    sealed_body: bytes | None
    claimant: str | None
    lease_expired: bool
    job_id: str | None


class Idempotency(Repository):
    async def get(self, account_id: str, key: str) -> IdempotencyClaim | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_idempotent, account_id, key)
        if row is None:
            return None
        return IdempotencyClaim(
            request_hash=bytes(row["request_hash"]), status=row["status"],
            sealed_body=bytes(row["sealed_body"]) if row["sealed_body"] is not None else None,
            claimant=row["claimant"], lease_expired=row["lease_expired"],
            job_id=row["job_id"])

    async def claim(self, account_id: str, key: str, request_hash: bytes, claimant: str,
                    lease_seconds: float) -> bool:
        """Claim a key before doing the work: of two concurrent requests, one wins."""
        async with self.pool.acquire() as conn:
            return await conn.fetchval(Q.claim_idempotent, account_id, key, request_hash,
                                       claimant, lease_seconds) is not None

    async def take_over(self, account_id: str, key: str, dead: str | None, claimant: str,
                        lease_seconds: float) -> tuple[bool, str | None]:
        """Take over the claim *dead* held: (taken over, job the dead request created)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.take_over_idempotent, account_id, key, dead,
                                      claimant, lease_seconds)
        return (row is not None, row["job_id"] if row is not None else None)

    async def renew(self, account_id: str, key: str, claimant: str,
                    lease_seconds: float) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.renew_idempotent, account_id, key, claimant, lease_seconds)

    async def put(self, account_id: str, key: str, claimant: str, status: int,
                  sealed_body: bytes) -> bool:
        """Record the first answer; False when the claim was taken over meanwhile."""
        async with self.pool.acquire() as conn:
            return await conn.fetchval(Q.put_idempotent, account_id, key, claimant, status,
                                       sealed_body) is not None

    async def release(self, account_id: str, key: str, claimant: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.release_idempotent, account_id, key, claimant)

    @contextmanager
    def scope(self, account_id: str, key: str, claimant: str) -> Iterator[None]:
        """Within this block, the first job created for *account_id* is recorded on the
        idempotency key in the job's own transaction (``Jobs.insert``)."""
        token = IDEMPOTENCY.set((account_id, key, claimant))
        try:
            yield
        finally:
            IDEMPOTENCY.reset(token)

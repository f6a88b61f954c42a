"""Jobs: the record of every asynchronous change a request asked for, with one item per
object the workers must converge. Other repositories insert a job inside their own
transaction (``Jobs.insert``), so the change and its job commit together."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import ids
from ..models import Job, from_record
from .db import Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn

# (account id, Idempotency-Key, claimant) of the request being handled, if it has a key.
IDEMPOTENCY: ContextVar[tuple[str, str, str] | None] = ContextVar("mailforge_idempotency",
                                                                  default=None)


class Jobs(Repository):
    async def insert(self, conn: Conn, account_id: str, job_type: str,
                     resource_id: str | None, items: Sequence[tuple[str, str, int]],
                     result: dict[str, Any] | None = None,
                     sealed_secrets: bytes | None = None,
                     secrets_expire_at: datetime | None = None) -> Job:
        """A job and its items (kind, object id, generation), on the caller's
        transaction."""
        jid = ids.new_id("job")
        row = await conn.fetchrow(Q.insert_job, jid, account_id, job_type, resource_id,
                                  len(items), "pending", result or {}, sealed_secrets,
                                  secrets_expire_at)
        if items:
            await conn.execute(Q.insert_job_items, jid, list(range(len(items))),
                               [k for k, _, _ in items], [o for _, o, _ in items],
                               [g for _, _, g in items])
        claim = IDEMPOTENCY.get()
        if claim is not None and claim[0] == account_id:
            # Same transaction as the job: a crash before the answer is recorded still
            # lets a retry with the key find this job (api/idempotency.py idempotent).
            await conn.execute(Q.idempotent_job, *claim, jid)
        return from_record(Job, row)

"""Jobs: the record of every asynchronous change a request asked for, with one item per
object the workers must converge. Other repositories insert a job inside their own
transaction (``Jobs.insert``), so the change and its job commit together.

Reading jobs is scoped by account and by the request's domain restriction
(``scope``): a restricted token sees only the jobs about its domains and their
mailboxes."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import ids
from ..errors import NotFound
from ..models import Job, from_record
from . import scope
from .db import Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn

# (account id, Idempotency-Key, claimant) of the request being handled, if it has a key.
IDEMPOTENCY: ContextVar[tuple[str, str, str] | None] = ContextVar("mailforge_idempotency",
                                                                  default=None)


@dataclass(frozen=True)
class JobFailure:
    """One item of a job that failed: its position in the request, object, address."""

    index: int
    object_id: str
    address: str | None
    error: str | None


@dataclass(frozen=True)
class JobDetail:
    """A job, its failed items, and its sealed one-time secrets if not yet expired."""

    job: Job
    failures: list[JobFailure]
    sealed_secrets: bytes | None


# A position in the newest-first list of jobs: (created_at, id) of the last job shown.
JobPosition = tuple[datetime, str]


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    total: int
    # Where the next page starts, or None when this page is the last.
    next_position: JobPosition | None


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

    async def get(self, account_id: str, job_id: str) -> JobDetail:
        """The job, its failed items, and its sealed one-time secrets if not yet expired;
        404 for a job of another account or outside the domain restriction."""
        if not ids.has_prefix(job_id, "job"):
            raise NotFound("job")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_job, account_id, job_id, scope.names())
            if row is None:
                raise NotFound("job")
            failures = [JobFailure(index=r["seq"], object_id=r["object_id"],
                                   address=r["address"], error=r["error"])
                        for r in await conn.fetch(Q.failed_job_items, job_id)]
        sealed = row["sealed_secrets"] if row["secrets_live"] else None
        return JobDetail(from_record(Job, row), failures,
                         bytes(sealed) if sealed is not None else None)

    async def list_page(self, account_id: str, limit: int, offset: int,
                        after: JobPosition | None) -> JobPage:
        """Newest first: *limit* jobs after position *after* (keyset) and *offset*, and
        the number of jobs the caller may see in all."""
        restricted = scope.names()
        after_at, after_id = after if after is not None else (None, None)
        async with self.pool.acquire() as conn:
            # One more than asked: whether a next page exists, without a second query.
            rows = await conn.fetch(Q.list_jobs, account_id, limit + 1, offset, restricted,
                                    after_at, after_id)
            total = await conn.fetchval(Q.count_jobs, account_id, restricted)
        more = len(rows) > limit
        jobs = [from_record(Job, r) for r in rows[:limit]]
        last = jobs[-1] if more and jobs else None
        return JobPage(jobs, int(total),
                       (last.created_at, last.id) if last is not None else None)

"""Jobs: the truth about the progress of every long operation, read by the account
that asked for it (and, for a domain-restricted token, only about its domains).

The list is newest first with both paging styles of the contract: ``offset``, and an
opaque ``cursor`` (``next_cursor`` of the previous page, signed: see ``cursor.py``),
and carries ``total``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationFailed
from ..models import Job, Principal
from ..store.jobs import JobFailure
from .context import ServiceContext
from .cursor import Cursors

CURSOR_KIND = "jobs"


@dataclass(frozen=True)
class JobView:
    job: Job
    failures: list[JobFailure]
    # Generated passwords of the mailboxes the job created, readable until the
    # configured expiry (then None).
    users: list[dict[str, Any]] | None


async def get_job(ctx: ServiceContext, principal: Principal, job_id: str) -> JobView:
    detail = await ctx.store.jobs.get(principal.account_id, job_id)
    users = None
    if detail.sealed_secrets is not None:
        users = json.loads(ctx.box.open(detail.sealed_secrets,
                                        f"job-secrets:{detail.job.id}"))
    return JobView(detail.job, detail.failures, users)


@dataclass(frozen=True)
class JobList:
    jobs: list[Job]
    total: int
    limit: int
    offset: int
    next_cursor: str | None


async def list_jobs(ctx: ServiceContext, principal: Principal, limit: int, offset: int,
                    cursor: str | None) -> JobList:
    """A page of the account's jobs, newest first: from the start, after *offset* jobs,
    or where *cursor* (a ``next_cursor`` this API returned) says."""
    if cursor is not None and offset:
        raise ValidationFailed(["cursor: give cursor or offset, not both"])
    cursors = Cursors(ctx.box)
    after = (cursors.decode_time_id(CURSOR_KIND, principal.account_id, cursor)
             if cursor is not None else None)
    page = await ctx.store.jobs.list_page(principal.account_id, limit, offset, after)
    nxt = (cursors.encode_time_id(CURSOR_KIND, principal.account_id, *page.next_position)
           if page.next_position is not None else None)
    return JobList(page.jobs, page.total, limit, offset, nxt)

"""Jobs: the truth about the progress of every long operation, read by the account
that asked for it (and, for a domain-restricted token, only about its domains).

The list is newest first with both paging styles of the contract: ``offset``, and an
opaque keyset ``cursor`` (``next_cursor`` of the previous page, ``mailforge.paging``),
and carries ``total``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import ids, paging
from ..errors import ValidationFailed
from ..models import Job, Principal
from ..store.jobs import JobFailure, JobPosition
from .context import ServiceContext

# The sort a jobs cursor belongs to: newest first by (created_at, id).
CURSOR_SORT = "jobs:created_at-desc,id-desc"
BAD_CURSOR = "cursor: not a cursor of this list (use next_cursor as given)"


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


def _position(cursor: str) -> JobPosition:
    """The (created_at, id) a jobs cursor holds, or 400 naming ``cursor`` (also for a
    cursor of the right shape whose values are not a time and a job id)."""
    at, jid = paging.decode(cursor, CURSOR_SORT, 2)
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not isinstance(jid, str) \
            or not ids.has_prefix(jid, "job"):
        raise ValidationFailed([BAD_CURSOR])
    return when, jid


async def list_jobs(ctx: ServiceContext, principal: Principal, limit: int, offset: int,
                    cursor: str | None) -> JobList:
    """A page of the account's jobs, newest first: from the start, after *offset* jobs,
    or where *cursor* (a ``next_cursor`` this API returned) says; the cursor takes
    precedence over the offset (the answer then says offset 0)."""
    after = _position(cursor) if cursor is not None else None
    if after is not None:
        offset = 0
    page = await ctx.store.jobs.list_page(principal.account_id, limit, offset, after)
    nxt = None
    if page.next_position is not None:
        at, jid = page.next_position
        nxt = paging.encode(CURSOR_SORT, [at.isoformat(), jid])
    return JobList(page.jobs, page.total, limit, offset, nxt)

"""The audit log: recording each successful write (the API's middleware calls
``record`` for every route) and reading an account's events, newest first.

Reading is account-wide: not for a domain-restricted token. Recording never turns a
completed write into a failure: the caller logs a failed record and answers anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import paging
from ..errors import ValidationFailed
from ..models import Principal
from ..store.audit import AuditEvent, AuditFilter, AuditRecord
from .access import require_unrestricted
from .context import ServiceContext

__all__ = ["AuditEvent", "AuditFilter", "AuditPage", "AuditRecord", "list_events",
           "record"]

# The sort an audit cursor belongs to: newest first by the log's sequence number.
CURSOR_SORT = "audit:seq-desc"
MAX_TEXT = 128


async def record(ctx: ServiceContext, event: AuditEvent) -> str:
    """Append *event*; returns its id."""
    return await ctx.store.audit.record(event)


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditRecord]
    limit: int
    # Where the next page starts, or None when this page is the last.
    next_cursor: str | None


def check_filter(flt: AuditFilter) -> None:
    errs = [f"{name}: must be at most {MAX_TEXT} printable characters"
            for name, v in (("action", flt.action), ("token_id", flt.token_id),
                            ("resource_id", flt.resource_id))
            if v is not None and (len(v) > MAX_TEXT or not v.isprintable())]
    for name, t in (("since", flt.since), ("until", flt.until)):
        if t is not None and t.tzinfo is None:
            errs.append(f"{name}: must be an RFC 3339 time with a zone")
    if errs:
        raise ValidationFailed(errs)


async def list_events(ctx: ServiceContext, principal: Principal, flt: AuditFilter,
                      limit: int, cursor: str | None) -> AuditPage:
    """The account's events matching *flt*, newest first, *limit* per page, from
    *cursor* (a ``next_cursor`` this API returned) on."""
    require_unrestricted(principal)
    check_filter(flt)
    before: int | None = None
    if cursor is not None:
        (seq,) = paging.decode(cursor, CURSOR_SORT, 1)
        before = seq if isinstance(seq, int) else None
        if before is None or before < 1:
            raise ValidationFailed(["cursor: not a cursor of this list (use next_cursor "
                                    "as given)"])
    # One more than asked: whether a next page exists.
    rows = await ctx.store.audit.list(principal.account_id, flt, before, limit + 1)
    page = rows[:limit]
    nxt = paging.encode(CURSOR_SORT, [page[-1].seq]) if len(rows) > limit else None
    return AuditPage(page, limit, nxt)

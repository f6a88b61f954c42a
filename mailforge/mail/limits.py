"""Daily send limits with an optional warm-up ramp: pure functions, shared by the API
(429 before submitting) and the Postfix policy service (which does the counting)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True)
class Warmup:
    start_limit: int
    days: int
    started_on: date


def warmup_limit(target: int, warmup: Warmup | None, today: date) -> int:
    """The limit on *today*: the target, or during warm-up a linear ramp from
    ``start_limit`` on the first day to *target* after ``days`` days."""
    if warmup is None or target <= warmup.start_limit:
        return target
    elapsed = (today - warmup.started_on).days
    if elapsed < 0:
        return min(target, warmup.start_limit)
    if elapsed >= warmup.days:
        return target
    step = (target - warmup.start_limit) / warmup.days
    return min(target, warmup.start_limit + int(step * elapsed))


def effective_limit(own: int | None, default: int, warmup: Warmup | None, today: date) -> int:
    return warmup_limit(default if own is None else own, warmup, today)


def utc_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def seconds_until_reset(now: datetime | None = None) -> int:
    """Seconds until the next UTC midnight, when the daily count starts over."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1, int((midnight - now).total_seconds()) + 1)


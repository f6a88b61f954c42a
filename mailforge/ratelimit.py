"""Token-bucket rate limiting, in memory, per daemon.

Each key (an API token id, or a client address for failed authentications) has a
bucket of ``burst`` requests refilled at ``rate`` per second. The buckets live in the
process: with several daemons behind a balancer a client gets up to N times the rate,
which is acceptable for abuse protection (the limit exists to stop floods, not to bill).
Memory is bounded: the least recently used buckets are dropped beyond ``max_keys``
(a dropped bucket is full again, i.e. the error is in the client's favour).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        # key -> (tokens left, time of last refill)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend *cost* from *key*'s bucket. Returns 0 when allowed, else the seconds
        until the request would be allowed (nothing is spent then)."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (cost - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> str:
    """A ``Retry-After`` value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait)))

"""Request rate limits: one token bucket per caller, bounded in memory.

A caller is a token (by its public id) or, for requests without a valid token, the client's IP address, so
that guessing tokens is throttled as hard as anything else. Buckets refill continuously; a caller over its
budget learns how many seconds until the next request would pass (the ``Retry-After`` of a 429).

Memory stays bounded under a flood of distinct callers (spoofed addresses, random tokens): at most
``max_callers`` buckets are kept and the least recently used is forgotten first — forgetting a bucket only
ever gives that caller a fresh, full budget, never less.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict

__all__ = ["RateLimit", "RateLimiter"]


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    """A budget: `per_minute` requests a minute on average, up to `burst` at once."""

    per_minute: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1:
            raise ValueError(f"a rate limit needs per_minute > 0 and burst >= 1, not {self}")


class RateLimiter:
    """Token buckets per caller key (thread-safe)."""

    def __init__(self, limit: RateLimit, *, max_callers: int = 10_000) -> None:
        self._limit = limit
        self._rate = limit.per_minute / 60.0
        self._max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def limit(self) -> RateLimit:
        """The budget every caller gets."""
        return self._limit

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, caller: str, now: float) -> float:
        """Spend one request of `caller`'s budget at time `now` (seconds, monotonic).

        Returns:
            0.0 when the request may pass, else the seconds until it would (rounded up to whole seconds,
            at least 1, as ``Retry-After`` wants).
        """
        with self._lock:
            tokens, stamp = self._buckets.pop(caller, (float(self._limit.burst), now))
            tokens = min(float(self._limit.burst), tokens + max(0.0, now - stamp) * self._rate)
            if tokens >= 1.0:
                self._remember(caller, tokens - 1.0, now)
                return 0.0
            self._remember(caller, tokens, now)
            return float(max(1, math.ceil((1.0 - tokens) / self._rate)))

    def _remember(self, caller: str, tokens: float, now: float) -> None:
        self._buckets[caller] = (tokens, now)
        while len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)

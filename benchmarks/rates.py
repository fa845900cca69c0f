"""Timing shared by the small construct benchmarks: the best rate of several short runs.

The best run is the least disturbed one on a shared, noisy VM; the benchmarks print rates, never assert them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RUNS", "best_rate"]

RUNS = 7


def best_rate(work: Callable[[], object], seconds: float = 0.3, runs: int = RUNS) -> float:
    """Calls of `work` per second, the best of `runs` runs of `seconds` each."""
    best = 0.0
    for _ in range(runs):
        count = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            work()
            count += 1
        best = max(best, count / elapsed)
    return best

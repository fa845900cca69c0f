"""The shared retry schedule."""

from __future__ import annotations

import random

import pytest

from bmsgate.runtime.backoff import Backoff, exponential_delay


def test_doubles_and_caps_without_jitter() -> None:
    backoff = Backoff(1.0, 8.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_jitter_stays_within_its_spread_and_spreads() -> None:
    rng = random.Random(3)
    delays = [exponential_delay(2, initial=1.0, maximum=60.0, jitter=0.25, rng=rng) for _ in range(50)]
    assert all(3.0 <= delay <= 5.0 for delay in delays)
    assert len(set(delays)) > 40


def test_huge_failure_counts_do_not_overflow() -> None:
    assert exponential_delay(10_000, initial=1.0, maximum=30.0) == 30.0


@pytest.mark.parametrize(("initial", "maximum", "jitter"), [(0.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 2.0, 1.5)])
def test_invalid_schedules(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"initial|jitter"):
        Backoff(initial, maximum, jitter=jitter)

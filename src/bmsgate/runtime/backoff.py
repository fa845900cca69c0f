"""Capped exponential backoff with jitter: the one retry schedule every part of bmsgate uses.

Pollers, the BLE reconnect loop, the MQTT connection, the Modbus server and client, and the CAN bus
reopen all wait ``initial × factor^failures`` (capped at ``maximum``) between attempts. Jitter
spreads the waits so that several things that failed together (an adapter reset, a broker restart)
do not retry in lock-step.
"""

from __future__ import annotations

import dataclasses
import random

__all__ = ["Backoff", "exponential_delay"]


def exponential_delay(
    failures: int,
    *,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after `failures` + 1 consecutive failures (``failures`` counts from 0).

    `jitter` spreads the delay by ± that fraction (0 = none, 0.5 = between half and one and a half).
    """
    base = min(maximum, initial * factor ** min(max(failures, 0), 60))
    if jitter <= 0:
        return base
    spread = (rng or random).uniform(-jitter, jitter)
    return max(0.0, base * (1.0 + spread))


@dataclasses.dataclass(slots=True)
class Backoff:
    """A retry schedule with its own failure count.

    Attributes:
        initial: delay after the first failure, s.
        maximum: cap, s.
        factor: growth per further failure.
        jitter: relative ± spread (0..1).
        rng: random source (tests make it reproducible).
        failures: consecutive failures so far.
    """

    initial: float
    maximum: float
    factor: float = 2.0
    jitter: float = 0.0
    rng: random.Random | None = None
    failures: int = 0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial:
            raise ValueError("need 0 < initial <= maximum")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def next_delay(self) -> float:
        """The wait before the next attempt; counts one more failure."""
        delay = exponential_delay(
            self.failures,
            initial=self.initial,
            maximum=self.maximum,
            factor=self.factor,
            jitter=self.jitter,
            rng=self.rng,
        )
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures (after a success)."""
        self.failures = 0

"""One tick grid for every periodic task: the gateway wakes once for all of them, not once each.

Each wake-up of an idle process costs a fixed amount of CPU before any work is done: on the test machine
about 0.3 ms (docs/performance.md, "Wake-ups"), as much as a whole poll's decoding and publishing.
Pollers, the inverter controller, the CAN transmitter and the simulators each used to sleep for their own
period from their own start, so their timers drifted apart and the demo woke about eight times a second.

Here a periodic task instead sleeps until the next whole multiple of its period on the event loop's clock.
Tasks with the same period (or periods that divide each other: 0.5, 1, 2, 5 s) then share the instant, and
asyncio runs every timer due at that instant in one pass of its loop: one wake-up for all of them. The
period of each task is unchanged; only its phase is shared. A task may still wake early for an event (a
fresh snapshot, an urgent alarm); its next regular tick stays on the grid.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from bmsgate.runtime.wakeup import wake

__all__ = ["TICK_TOLERANCE", "sleep_until", "tick_after", "tick_at_or_after"]

TICK_TOLERANCE: Final = 1e-3
"""Seconds within which an instant before a tick counts as the tick itself. An event loop runs a timer up to
its clock's resolution early (asyncio's: nanoseconds; uvloop rounds to whole milliseconds, so up to half of
one), so a task woken for tick T may read a time just below T; without the tolerance it would compute T
again, run twice and spin until the clock passes T. The price: a period may come out up to this much long."""


def _check(period: float) -> None:
    if not period > 0 or math.isinf(period):
        raise ValueError(f"a tick period must be a positive finite number of seconds, not {period!r}")


def tick_after(now: float, period: float) -> float:
    """The first multiple of `period` later than `now` (a time within the tolerance of a tick is that tick).

    Raises:
        ValueError: `period` is not positive and finite.
    """
    _check(period)
    return (math.floor((now + TICK_TOLERANCE) / period) + 1.0) * period


def tick_at_or_after(instant: float, period: float) -> float:
    """The first multiple of `period` not earlier than `instant` (within the tolerance).

    Raises:
        ValueError: `period` is not positive and finite.
    """
    _check(period)
    return math.ceil((instant - TICK_TOLERANCE) / period) * period


async def sleep_until(deadline: float) -> None:
    """Sleep until `deadline` on the running loop's clock.

    Unlike ``asyncio.sleep(deadline - loop.time())``, the timer gets `deadline` itself: computing a delay
    and adding it back to a later clock reading gives a slightly different instant for every task, and
    timers that differ do not share a wake-up.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(deadline, wake, future)
    try:
        await future
    finally:
        handle.cancel()

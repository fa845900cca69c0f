"""`Wakeup`: an asyncio event whose wait takes a deadline, without a cancellation when the deadline passes.

Every periodic task of the gateway waits for "something happened or the next tick came": the poller between
polls, the inverter controller, the CAN transmitter, the Modbus and Home Assistant outputs. With
``asyncio.timeout`` around ``Event.wait()`` each such wait arms a `Timeout` and, when the tick comes first (most
of the time), cancels the task: a `CancelledError` thrown into the coroutine, unwound through every frame of
the wait, turned into a `TimeoutError` and caught again. In the demo that was four to five cancellations a
second, each costing several times the work it woke for (docs/performance.md, "Wake-ups"). Here the deadline
is a timer that resolves the waiter's future with False: the task resumes as if the event had been set.
"""

from __future__ import annotations

import asyncio

__all__ = ["Wakeup", "wake"]


def wake(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless it is done already (a timer's or a producer's callback)."""
    if not future.done():
        future.set_result(None)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Wakeup:
    """Set / clear / is_set / wait as `asyncio.Event`, plus :meth:`wait_until` with a deadline on the loop's clock."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[bool]] = []

    def is_set(self) -> bool:
        """Whether it is set."""
        return self._flag

    def set(self) -> None:
        """Set it and wake every waiter."""
        if self._flag:
            return
        self._flag = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        """Clear it (waiters already woken stay woken)."""
        self._flag = False

    async def wait(self) -> bool:
        """Wait until it is set; True."""
        return await self.wait_until(None)

    async def wait_until(self, deadline: float | None) -> bool:
        """Wait until it is set (True) or the loop's clock reaches `deadline` (False; None: no deadline).

        A deadline already past still yields to the loop once, as a timeout would, so a loop of such waits
        never starves the others.
        """
        if self._flag:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        handle = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiters.remove(waiter)

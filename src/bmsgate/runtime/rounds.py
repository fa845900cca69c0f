"""Poll rounds: which polls of this instant are still under way, so that outputs take their results together.

Batteries with the same interval poll at the same tick of the shared grid (runtime/cadence.py), but their
replies come back a few passes of the event loop apart (a protocol with more requests takes longer). An
output that reacted to each snapshot on its own recomputed and published once per battery: the inverter
controller's bank and limits (and every output listening to it), Home Assistant's flush, and a CAN frame set
sent at the tick with the previous round's values, then again for the new ones. On the test machine each of
those passes costs a few hundred microseconds, because the code runs with cold caches once a second
(docs/performance.md, "Wake-ups"). An output that waits for the round to settle handles it in one pass.

The wait is bounded: a poll counts as part of the round only for `ROUND_WAIT` after it began, so a poll that
takes longer (a reconnect, a retry, a slow radio) is not waited for, and its snapshot is handled when it
comes, as before. Nothing waits when no poll is under way; waiting never drops or reorders a snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Final

from bmsgate.runtime.wakeup import wake

__all__ = ["ROUND_WAIT", "PollRounds"]

ROUND_WAIT: Final = 0.25
"""Seconds after its start that a poll still counts as part of its round (the longest an output waits for it).
Simulated and serial polls finish within milliseconds; a BLE poll that takes longer than this spreads over
several passes anyway, and an inverter that hears a lowered limit this much later loses nothing: the data is
already up to a poll interval old."""


class _Waiter:
    """One output waiting for a round: the polls it waits for (with their starts) and its timer."""

    __slots__ = ("future", "pending", "timer")

    def __init__(self, future: asyncio.Future[None], pending: dict[str, float]) -> None:
        self.future = future
        self.pending = pending
        self.timer: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)arm the timer at the round's deadline: `ROUND_WAIT` after the latest start still pending.

        Recomputed as polls end, so a slow poll whose own window has passed holds nobody once the newer
        polls of the round are in.
        """
        if self.timer is not None:
            self.timer.cancel()
        deadline = max(self.pending.values()) + ROUND_WAIT
        self.timer = loop.call_at(deadline, wake, self.future)


class PollRounds:
    """The polls under way and the outputs waiting for them (one per hub: `SnapshotHub.rounds`).

    The poller calls :meth:`began` before a poll and :meth:`ended` after its snapshot was published (or the
    poll failed); outputs await :meth:`settled`. Times are the event loop's clock.
    """

    def __init__(self) -> None:
        self._began: dict[str, float] = {}
        self._waiters: list[_Waiter] = []

    def began(self, battery_id: str) -> None:
        """A poll of `battery_id` starts now."""
        self._began[battery_id] = asyncio.get_running_loop().time()

    def ended(self, battery_id: str) -> None:
        """The poll of `battery_id` is over (its snapshot, if any, is in the hub)."""
        if self._began.pop(battery_id, None) is None:
            return
        for waiter in self._waiters:
            if waiter.pending.pop(battery_id, None) is None:
                continue
            if not waiter.pending:
                wake(waiter.future)
            else:
                waiter.arm(asyncio.get_running_loop())

    def under_way(self, battery_ids: Collection[str] | None = None) -> tuple[dict[str, float], float]:
        """The current round's polls of `battery_ids` (None: every battery) by start, and its deadline.

        Only polls that began within `ROUND_WAIT` count; an empty mapping: no round is under way.
        """
        if not self._began:
            return {}, 0.0
        now = asyncio.get_running_loop().time()
        pending = {
            battery_id: began
            for battery_id, began in self._began.items()
            if began > now - ROUND_WAIT and (battery_ids is None or battery_id in battery_ids)
        }
        return pending, (max(pending.values()) + ROUND_WAIT if pending else 0.0)

    async def settled(self, battery_ids: Collection[str] | None = None) -> bool:
        """Wait until the current round of `battery_ids` (None: every battery) is over, or its deadline passed.

        Returns:
            True when there was a round to wait for.
        """
        # Polls due at the caller's own tick begin in the same pass of the loop as the caller woke in; one
        # pass later they have all begun.
        await asyncio.sleep(0)
        pending, _deadline = self.under_way(battery_ids)
        if not pending:
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), pending)
        waiter.arm(loop)
        self._waiters.append(waiter)
        try:
            await waiter.future
        finally:
            if waiter.timer is not None:
                waiter.timer.cancel()
            self._waiters.remove(waiter)
        return True

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

__all__ = ["ROUND_WAIT", "PollRounds"]

ROUND_WAIT: Final = 0.25
"""Seconds after its start that a poll still counts as part of its round (the longest an output waits for it).
Simulated and serial polls finish within milliseconds; a BLE poll that takes longer than this spreads over
several passes anyway, and an inverter that hears a lowered limit this much later loses nothing: the data is
already up to a poll interval old."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PollRounds:
    """The polls under way and the outputs waiting for them (one per hub: `SnapshotHub.rounds`).

    The poller calls :meth:`began` before a poll and :meth:`ended` after its snapshot was published (or the
    poll failed); outputs await :meth:`settled`. Times are the event loop's clock.
    """

    def __init__(self) -> None:
        self._began: dict[str, float] = {}
        self._waiters: list[tuple[set[str], asyncio.Future[None]]] = []

    def began(self, battery_id: str) -> None:
        """A poll of `battery_id` starts now."""
        self._began[battery_id] = asyncio.get_running_loop().time()

    def ended(self, battery_id: str) -> None:
        """The poll of `battery_id` is over (its snapshot, if any, is in the hub)."""
        if self._began.pop(battery_id, None) is None:
            return
        for pending, future in self._waiters:
            pending.discard(battery_id)
            if not pending:
                _wake(future)

    def under_way(self, battery_ids: Collection[str] | None = None) -> tuple[set[str], float]:
        """The batteries of `battery_ids` (None: every one) in the current round, and until when it may run.

        Only polls that began within `ROUND_WAIT` count; an empty set: no round is under way.
        """
        if not self._began:
            return set(), 0.0
        now = asyncio.get_running_loop().time()
        pending: set[str] = set()
        latest = 0.0
        for battery_id, began in self._began.items():
            if began > now - ROUND_WAIT and (battery_ids is None or battery_id in battery_ids):
                pending.add(battery_id)
                latest = max(latest, began)
        return pending, latest + ROUND_WAIT

    async def settled(self, battery_ids: Collection[str] | None = None) -> bool:
        """Wait until the current round of `battery_ids` (None: every battery) is over, or its deadline passed.

        Returns:
            True when there was a round to wait for.
        """
        # Polls due at the caller's own tick begin in the same pass of the loop as the caller woke in; one
        # pass later they have all begun.
        await asyncio.sleep(0)
        pending, deadline = self.under_way(battery_ids)
        if not pending:
            return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (pending, future)
        self._waiters.append(entry)
        handle = loop.call_at(deadline, _wake, future)
        try:
            await future
        finally:
            handle.cancel()
            self._waiters.remove(entry)
        return True

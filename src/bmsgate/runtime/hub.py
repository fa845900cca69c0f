"""SnapshotHub: the latest snapshot per battery, its age, staleness, and fan-out to outputs.

Pollers publish; outputs subscribe. A subscription never applies back-pressure: it holds at most one
pending update per battery (the newest), so a slow output skips intermediate values instead of
slowing a poller or growing memory. Staleness is a normal state, not an error: when no fresh
snapshot arrived within a battery's budget, subscribers get an update with ``stale=True`` (once), and
another when data recovers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Final

from bmsgate.model import BatterySnapshot
from bmsgate.runtime.cadence import tick_after
from bmsgate.runtime.rounds import PollRounds
from bmsgate.runtime.wakeup import Wakeup

__all__ = ["DEFAULT_STALE_AFTER", "HubUpdate", "SnapshotHub", "Subscription"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_STALE_AFTER: Final = 60.0
"""Seconds without a fresh snapshot after which a battery counts as stale (when not configured)."""


@dataclasses.dataclass(frozen=True, slots=True)
class HubUpdate:
    """What a subscriber receives: the battery's newest snapshot (if any) and whether it is stale."""

    battery_id: str
    snapshot: BatterySnapshot | None
    stale: bool
    received_at: float
    """Monotonic time at which `snapshot` reached the hub (0.0 when there is none)."""
    removed: bool = False
    """The battery was removed while running (see :meth:`SnapshotHub.unregister`): forget it."""


class Subscription:
    """A subscriber's mailbox: one pending update per battery, newest wins."""

    def __init__(self, hub: SnapshotHub, name: str) -> None:
        self._hub = hub
        self.name = name
        self._pending: dict[str, HubUpdate] = {}
        self._wakeup = Wakeup()
        self.skipped = 0
        """Updates overwritten before the subscriber read them (a measure of how far it lags)."""

    def _offer(self, update: HubUpdate) -> None:
        if self._pending.pop(update.battery_id, None) is not None:
            self.skipped += 1
        # Re-inserting moves the battery to the end: batteries are served in arrival order.
        self._pending[update.battery_id] = update
        self._wakeup.set()

    async def get(self) -> HubUpdate:
        """Wait for the next update (oldest battery first)."""
        update = await self.get_until(None)
        assert update is not None  # without a deadline only an update ends the wait
        return update

    async def get_until(self, deadline: float | None) -> HubUpdate | None:
        """The next update, or None when none came before `deadline` (the event loop's clock; None: never)."""
        while not self._pending:
            self._wakeup.clear()
            if not await self._wakeup.wait_until(deadline):
                return None
        battery_id = next(iter(self._pending))
        return self._pending.pop(battery_id)

    def get_nowait(self) -> HubUpdate | None:
        """The next pending update, or None."""
        if not self._pending:
            return None
        battery_id = next(iter(self._pending))
        return self._pending.pop(battery_id)

    def pending(self) -> int:
        """Number of batteries with an unread update."""
        return len(self._pending)

    def close(self) -> None:
        """Stop receiving updates."""
        self._hub._unsubscribe(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> HubUpdate:
        return await self.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclasses.dataclass(slots=True)
class _BatteryState:
    stale_after: float
    snapshot: BatterySnapshot | None = None
    received_at: float = 0.0
    stale: bool = True
    ever_seen: bool = False


class SnapshotHub:
    """Latest snapshot per battery with freshness, plus subscriptions.

    Args:
        clock: monotonic clock (injectable for tests).
        default_stale_after: staleness budget for batteries not registered explicitly.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        default_stale_after: float = DEFAULT_STALE_AFTER,
    ) -> None:
        self._clock = clock
        self._default_stale_after = default_stale_after
        self._batteries: dict[str, _BatteryState] = {}
        self._subscriptions: list[Subscription] = []
        self._deadline_moved = Wakeup()
        """Set when a battery's staleness deadline may have come earlier: :meth:`run` sleeps until the earliest."""
        self.rounds = PollRounds()
        """The polls under way (the pollers report them), for outputs that take a round's snapshots together."""

    # -- registration ---------------------------------------------------------------------------

    def register(self, battery_id: str, *, stale_after: float | None = None) -> None:
        """Declare a battery (so outputs know it before its first snapshot) and its staleness budget."""
        budget = self._default_stale_after if stale_after is None else stale_after
        if budget <= 0:
            raise ValueError("stale_after must be positive")
        state = self._batteries.get(battery_id)
        if state is None:
            self._batteries[battery_id] = _BatteryState(stale_after=budget)
        else:
            state.stale_after = budget
        self._deadline_moved.set()

    def unregister(self, battery_id: str) -> None:
        """Forget a battery removed at run time; subscribers get one last update with ``removed=True``.

        That update replaces any snapshot of the battery still pending in a subscription, so no output
        sees the battery again after it was told it is gone (until it is registered anew).
        """
        if self._batteries.pop(battery_id, None) is None:
            return
        self._fan_out(HubUpdate(battery_id, None, True, 0.0, removed=True))

    def battery_ids(self) -> list[str]:
        """Every known battery, in registration order."""
        return list(self._batteries)

    # -- producers ------------------------------------------------------------------------------

    def publish(self, snapshot: BatterySnapshot) -> None:
        """Record a fresh snapshot and hand it to every subscriber."""
        state = self._batteries.get(snapshot.battery_id)
        if state is None:
            state = self._batteries[snapshot.battery_id] = _BatteryState(self._default_stale_after)
        state.snapshot = snapshot
        state.received_at = self._clock()
        was_stale, state.stale = state.stale, False
        if was_stale:
            # A fresh battery's deadline only moves later with each snapshot; a stale one gets one again.
            self._deadline_moved.set()
            if state.ever_seen:
                _LOGGER.info("%s: fresh data again", snapshot.battery_id)
        state.ever_seen = True
        self._fan_out(HubUpdate(snapshot.battery_id, snapshot, False, state.received_at))

    def check_staleness(self) -> list[str]:
        """Mark batteries whose data aged past their budget as stale; returns the newly stale ids.

        The supervisor calls this periodically (see :meth:`run`); readers never need to, because
        :meth:`is_stale` always compares against the clock.
        """
        now = self._clock()
        newly_stale = []
        for battery_id, state in self._batteries.items():
            if not state.stale and now - state.received_at > state.stale_after:
                state.stale = True
                newly_stale.append(battery_id)
                _LOGGER.warning("%s: no fresh data for %.0f s, marking stale", battery_id, now - state.received_at)
                self._fan_out(HubUpdate(battery_id, state.snapshot, True, state.received_at))
        return newly_stale

    async def run(self, interval: float = 0.5) -> None:
        """Check staleness forever (run it as a supervised task).

        A battery is marked stale at the first tick of `interval` on the shared grid (runtime/cadence.py)
        after its budget ran out, so at most `interval` late. With the default monotonic clock the task
        sleeps until that tick instead of waking every `interval` for nothing (each wake-up of an idle
        gateway costs CPU); a snapshot that makes a stale battery fresh, or a new budget, wakes it to plan
        again. An injected clock can jump, so with one it checks every `interval`.
        """
        loop = asyncio.get_running_loop()
        while True:
            self.check_staleness()
            self._deadline_moved.clear()
            wake: float | None = tick_after(loop.time(), interval)
            if self._clock is time.monotonic:
                earliest = self._earliest_deadline()
                if earliest is None:
                    wake = None
                else:
                    # Converted through both clocks' readings: the loop's clock (uvloop's, say) need not
                    # share time.monotonic's origin.
                    stale_at = loop.time() + (earliest - self._clock())
                    wake = max(tick_after(loop.time(), interval), tick_after(stale_at, interval))
            await self._deadline_moved.wait_until(wake)

    def _earliest_deadline(self) -> float | None:
        """The clock time after which the first fresh battery goes stale; None when none is fresh."""
        deadlines = [state.received_at + state.stale_after for state in self._batteries.values() if not state.stale]
        return min(deadlines) if deadlines else None

    # -- readers --------------------------------------------------------------------------------

    def latest(self, battery_id: str) -> BatterySnapshot | None:
        """Newest snapshot, fresh or not (check :meth:`is_stale`)."""
        state = self._batteries.get(battery_id)
        return state.snapshot if state else None

    def age(self, battery_id: str) -> float | None:
        """Seconds since the newest snapshot arrived; None when none ever did."""
        state = self._batteries.get(battery_id)
        if state is None or state.snapshot is None:
            return None
        return self._clock() - state.received_at

    def is_stale(self, battery_id: str) -> bool:
        """True when there is no snapshot or it is older than the budget (always against the clock)."""
        state = self._batteries.get(battery_id)
        if state is None or state.snapshot is None:
            return True
        return self._clock() - state.received_at > state.stale_after

    def stale_after(self, battery_id: str) -> float:
        """The battery's staleness budget in seconds."""
        state = self._batteries.get(battery_id)
        return state.stale_after if state else self._default_stale_after

    def current(self) -> Iterator[HubUpdate]:
        """The present state of every battery (for outputs that (re)start and must publish everything)."""
        for battery_id, state in list(self._batteries.items()):
            yield HubUpdate(battery_id, state.snapshot, self.is_stale(battery_id), state.received_at)

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, name: str = "subscriber", *, replay: bool = True) -> Subscription:
        """A new subscription; with `replay` it starts with the present state of every battery."""
        subscription = Subscription(self, name)
        self._subscriptions.append(subscription)
        if replay:
            for update in self.current():
                if update.snapshot is not None:
                    subscription._offer(update)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _fan_out(self, update: HubUpdate) -> None:
        for subscription in self._subscriptions:
            subscription._offer(update)

"""`InverterController`: hub → bank → limits once, published as one :class:`InverterStatus` to every output.

With a limit engine per output, Modbus and CAN ramped and held on their own clocks and read the hub at
their own moments, and were seen presenting charge limits 12 A apart. Here one task owns the engine:
it recomputes on every update of a bank pack and at least every ``refresh_interval`` (so staleness,
ramps and timers advance without new data), logs the bank's state changes once, and publishes the
result on a :class:`StatusChannel`. The Modbus register map and the CAN profiles only encode it.

:meth:`InverterController.refresh` is synchronous and reads time only from the injected clock, so the
controller can be driven by hand with a fake clock; :meth:`InverterController.run` is the supervised task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from bmsgate.inverter.bank import BankState, PackInput, aggregate
from bmsgate.inverter.limits import LimitEngine, temperature_derating
from bmsgate.inverter.settings import InverterSettings
from bmsgate.inverter.status import (
    BankStatus,
    InverterLiveness,
    InverterStatus,
    combined_presence,
    initial_status,
)
from bmsgate.runtime.cadence import TICK_TOLERANCE, tick_after
from bmsgate.runtime.hub import HubUpdate, SnapshotHub, Subscription
from bmsgate.runtime.wakeup import Wakeup, wake

__all__ = ["InverterController", "StatusChannel", "StatusSubscription"]

_LOGGER = logging.getLogger(__name__)

_REFRESH_MARGIN: Final = 0.05
"""Seconds past a poll round's deadline that :meth:`InverterController.round_refreshed` waits for the refresh."""

_START_UP_GRACE: Final = 60.0
"""Seconds after start during which packs that have not reported yet are not warned about."""


class StatusSubscription:
    """One reader of a :class:`StatusChannel`: it only ever gets the newest status it has not seen.

    Nothing queues: a reader that falls behind skips straight to the latest value.
    """

    def __init__(self, channel: StatusChannel) -> None:
        self._channel = channel
        self._seen = -1
        self._changed = Wakeup()
        self._changed.set()

    def _notify(self) -> None:
        self._changed.set()

    def get_nowait(self) -> InverterStatus | None:
        """The newest status if it is one this reader has not seen, else None."""
        latest = self._channel.latest
        if latest.sequence == self._seen:
            return None
        self._seen = latest.sequence
        return latest

    async def get(self) -> InverterStatus:
        """Wait for a status newer than the last one read (the first call returns the current one)."""
        status = await self.get_until(None)
        assert status is not None  # without a deadline only a status ends the wait
        return status

    async def get_until(self, deadline: float | None) -> InverterStatus | None:
        """As :meth:`get`, or None when no newer status came before `deadline` (the loop's clock; None: never)."""
        while True:
            status = self.get_nowait()
            if status is not None:
                return status
            self._changed.clear()
            if not await self._changed.wait_until(deadline):
                return None

    def close(self) -> None:
        """Stop being notified."""
        self._channel._unsubscribe(self)

    def __enter__(self) -> StatusSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_packs(hub: SnapshotHub, battery_ids: Sequence[str], *, max_age: float | None = None) -> list[PackInput]:
    """The bank's packs as the hub sees them now (staleness always judged against the clock).

    Args:
        hub: where the snapshots come from.
        battery_ids: the packs forming the bank.
        max_age: an output's own, tighter freshness budget in seconds: older snapshots count as stale
            even when the hub's per-battery budget would still accept them.
    """
    packs = []
    for battery_id in battery_ids:
        age = hub.age(battery_id)
        stale = hub.is_stale(battery_id) or (max_age is not None and age is not None and age > max_age)
        packs.append(PackInput(battery_id, hub.latest(battery_id), stale, age))
    return packs


class StatusChannel:
    """The latest :class:`InverterStatus` plus change notification (no queues, newest wins).

    Args:
        initial: the value readers see before anything was published.
    """

    def __init__(self, initial: InverterStatus) -> None:
        self._latest = initial
        self._subscriptions: list[StatusSubscription] = []

    @property
    def latest(self) -> InverterStatus:
        """The newest status."""
        return self._latest

    def publish(self, status: InverterStatus) -> None:
        """Make `status` the latest and wake every reader."""
        self._latest = status
        for subscription in self._subscriptions:
            subscription._notify()

    def subscribe(self) -> StatusSubscription:
        """A new reader; its first :meth:`StatusSubscription.get` returns the current status at once."""
        subscription = StatusSubscription(self)
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: StatusSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


class InverterController:
    """The one bank and limit engine behind every inverter output (a supervised task right of the hub).

    Args:
        settings: the ``inverter`` configuration (bank membership, limits, refresh interval).
        clock: monotonic clock for data ages and limit dynamics; must be the hub's clock.
    """

    name = "inverter"

    def __init__(self, settings: InverterSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = LimitEngine(settings.limits)
        self.channel = StatusChannel(initial_status(settings.batteries))
        self._started = clock()
        self._sequence = 0
        self._heartbeat = 0
        self._last_fresh: BankState | None = None
        self._last_state: BankStatus | None = None
        self._watches: list[InverterLiveness] = []
        self._refresh_waiters: list[asyncio.Future[None]] = []
        self.refreshed = asyncio.Event()
        """Set after every published status (cleared by whoever waits on it)."""

    @property
    def status(self) -> InverterStatus:
        """The status currently published."""
        return self.channel.latest

    def watch(self, liveness: InverterLiveness) -> InverterLiveness:
        """Fold an output's sign-of-life watch into the status's ``inverter_present``; returns it."""
        self._watches.append(liveness)
        return liveness

    def battery_ids(self, hub: SnapshotHub) -> Sequence[str]:
        """The bank's packs (the configured ones, or every battery the hub knows)."""
        return self.settings.batteries or hub.battery_ids()

    def refresh(self, hub: SnapshotHub, *, fresh_data: bool = False) -> InverterStatus:
        """Recompute bank and limits from `hub` now and publish the result.

        Args:
            hub: where the packs' snapshots come from.
            fresh_data: a fresh snapshot of a bank pack arrived since the last refresh (advances the
                outgoing heartbeat).

        Returns:
            The new status.
        """
        now = self.clock()
        battery_ids = self.battery_ids(hub)
        packs = read_packs(hub, battery_ids, max_age=self.settings.safe_after)
        bank = aggregate(packs, soc_extreme_band=self.settings.soc_extreme_band)
        limits = self.engine.update(bank, now)
        if not bank.stale:
            self._last_fresh = bank
            if fresh_data:
                self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        ages = [pack.age for pack in packs if pack.age is not None]
        self._sequence += 1
        status = InverterStatus(
            bank=bank,
            limits=limits,
            heartbeat=self._heartbeat,
            inverter_present=combined_presence(watch.check(now) for watch in self._watches),
            updated_at=now,
            sequence=self._sequence,
            data_age=min(ages) if ages else None,
            last_fresh=self._last_fresh,
            temperature_derating=temperature_derating(bank, self.settings.limits),
        )
        self._log_state(status, now)
        self.channel.publish(status)
        self.refreshed.set()
        waiters, self._refresh_waiters = self._refresh_waiters, []
        for waiter in waiters:
            wake(waiter)
        return status

    async def round_refreshed(self, hub: SnapshotHub) -> bool:
        """Return once the status carries the bank's current poll round (at once when none is under way).

        An output about to send the status at a tick that is also the bank's poll tick waits for this, so that
        it sends the round's values instead of the previous ones followed by the new ones. Bounded by the
        round's deadline (runtime/rounds.py) and the refresh after it.

        Returns:
            True when a round was under way (and waited for).
        """
        await asyncio.sleep(0)  # the pollers due at this tick begin in the pass the caller woke in
        pending, deadline = hub.rounds.under_way(self.battery_ids(hub))
        if not pending:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._refresh_waiters.append(waiter)
        # At the deadline the controller refreshes with what it has: a little later, this returns regardless.
        handle = loop.call_at(deadline + _REFRESH_MARGIN, wake, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            if waiter in self._refresh_waiters:
                self._refresh_waiters.remove(waiter)
        return True

    async def run(self, hub: SnapshotHub) -> None:
        """Recompute on bank updates and every ``refresh_interval`` until cancelled.

        An update of a pack outside the bank recomputes nothing (the status would be the same); the tick
        still comes every ``refresh_interval`` however many such updates arrive, so staleness, ramps and
        timers advance on time.
        """
        loop = asyncio.get_running_loop()
        interval = self.settings.refresh_interval
        with hub.subscribe(self.name) as subscription:
            self.refresh(hub)
            # Ticks on the shared grid (runtime/cadence.py), so they share a wake-up with the pollers and
            # the transmitters. A refresh for fresh data does not move the grid: the next tick comes at most
            # `interval` after any refresh, as before, only sometimes sooner.
            due = tick_after(loop.time(), interval)
            while True:
                updates = await self._next_updates(subscription, due)
                bank_ids = set(self.battery_ids(hub))
                bank_updates = [update for update in updates if update.battery_id in bank_ids]
                if not bank_updates and loop.time() < due - TICK_TOLERANCE:
                    continue
                # One refresh for the round (runtime/rounds.py): the tick's and every bank pack's of it. What
                # arrived meanwhile (even in the one pass `settled` yields without a round) is in it too.
                await hub.rounds.settled(bank_ids)
                while (update := subscription.get_nowait()) is not None:
                    if update.battery_id in bank_ids:
                        bank_updates.append(update)
                fresh = any(not update.stale and update.snapshot is not None for update in bank_updates)
                self.refresh(hub, fresh_data=fresh)
                due = tick_after(loop.time(), interval)

    async def _next_updates(self, subscription: Subscription, deadline: float) -> list[HubUpdate]:
        updates: list[HubUpdate] = []
        first = await subscription.get_until(deadline)
        if first is not None:
            updates.append(first)
        while (update := subscription.get_nowait()) is not None:
            updates.append(update)
        return updates

    def _log_state(self, status: InverterStatus, now: float) -> None:
        state = status.state
        if state is self._last_state:
            return
        level = logging.INFO if state in {BankStatus.OK, BankStatus.STARTING} else logging.WARNING
        if state is BankStatus.DEGRADED and not status.bank.offline and now - self._started < _START_UP_GRACE:
            # Packs still arriving one by one after start-up are not worth a warning.
            level = logging.INFO
        _LOGGER.log(
            level,
            "bank %s: %d of %d packs online, limits %s",
            state.value,
            status.bank.packs_online,
            status.bank.pack_count,
            status.reason.value,
        )
        self._last_state = state

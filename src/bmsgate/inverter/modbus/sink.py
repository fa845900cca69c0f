"""`ModbusSink`: the inverter bridge over Modbus — hub → bank → limits → register map → endpoint.

One task refreshes the register image: on every hub update for a bank pack, and at least every
`refresh_interval` so staleness, ramps and timers advance without new data. The endpoint (server or
client writer, see server.py) runs beside it and never waits for it; pollers are never waited on
(the hub subscription keeps only the newest update per battery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from bmsgate.inverter.bank import BankState
from bmsgate.inverter.modbus.heartbeat import HeartbeatMonitor
from bmsgate.inverter.modbus.registermap import RegisterImage, RegisterKind, RegisterMap, load_register_map
from bmsgate.inverter.modbus.server import ModbusClientWriter, ModbusEndpoint, ModbusServer, RegisterStore
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.status import BankTracker, InverterStatus, initial_status, read_packs
from bmsgate.runtime.hub import HubUpdate, SnapshotHub, Subscription

__all__ = ["ModbusSink", "read_packs"]

_LOGGER = logging.getLogger(__name__)


class ModbusSink:
    """Presents the battery bank to an inverter over Modbus.

    Args:
        settings: the ``outputs.modbus`` configuration.
        register_map: a compiled map; loaded from ``settings.register_map`` when omitted.
        clock: monotonic clock (injectable for tests).
    """

    name = "modbus"

    def __init__(
        self,
        settings: ModbusSettings,
        *,
        register_map: RegisterMap | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.register_map = register_map or load_register_map(settings.register_map)
        self._clock = clock
        self._tracker = BankTracker(
            settings.batteries,
            settings.limits,
            soc_extreme_band=settings.soc_extreme_band,
            label=self.name,
            clock=clock,
        )
        self._status = initial_status(settings.batteries)
        self._last_fresh: BankState | None = None
        """The last bank that was not stale: its measurements stay on show while the bank is stale."""
        self._heartbeat = 0
        self._listeners: list[Callable[[InverterStatus], None]] = []
        self.refreshed = asyncio.Event()
        """Set after every refresh of the register image (cleared by whoever waits on it)."""

        heartbeat_entry = self.register_map.heartbeat_in
        self._heartbeat_address = heartbeat_entry.address if heartbeat_entry else None
        self._monitor: HeartbeatMonitor | None = None
        if heartbeat_entry is not None and settings.mode != "client":
            self._monitor = HeartbeatMonitor(settings.heartbeat_in_timeout, clock())
        self.store = RegisterStore(self.register_map, on_write=self._on_write)
        self.store.update(self._encode())
        self.endpoint: ModbusEndpoint
        if settings.mode == "client":
            self.endpoint = ModbusClientWriter(settings, self._client_image)
        else:
            self.endpoint = ModbusServer(settings, self.store)

    # -- what other outputs read --------------------------------------------------------------------

    @property
    def status(self) -> InverterStatus:
        """The limits, bank state and limitation reason currently published."""
        return self._status

    def add_listener(self, callback: Callable[[InverterStatus], None]) -> None:
        """Call `callback` with every new status (it must return quickly and not raise)."""
        self._listeners.append(callback)

    # -- running ------------------------------------------------------------------------------------

    async def run(self, hub: SnapshotHub) -> None:
        """Refresh from `hub` and serve/write until cancelled."""
        with hub.subscribe(self.name) as subscription:
            self.refresh(hub)
            async with asyncio.TaskGroup() as group:
                group.create_task(self.endpoint.run(), name=f"{self.name}-endpoint")
                group.create_task(self._refresh_loop(hub, subscription), name=f"{self.name}-refresh")

    async def _refresh_loop(self, hub: SnapshotHub, subscription: Subscription) -> None:
        while True:
            updates: list[HubUpdate] = []
            try:
                async with asyncio.timeout(self.settings.refresh_interval):
                    updates.append(await subscription.get())
            except TimeoutError:
                pass
            while (update := subscription.get_nowait()) is not None:
                updates.append(update)
            bank_ids = set(self._battery_ids(hub))
            fresh = any(u.battery_id in bank_ids and not u.stale and u.snapshot is not None for u in updates)
            self.refresh(hub, fresh_data=fresh)

    def _battery_ids(self, hub: SnapshotHub) -> Sequence[str]:
        return self._tracker.battery_ids(hub)

    def refresh(self, hub: SnapshotHub, *, fresh_data: bool = False) -> InverterStatus:
        """Recompute the bank, limits and registers now.

        Args:
            hub: where the packs' snapshots come from.
            fresh_data: a fresh snapshot of a bank pack arrived since the last refresh (advances the
                outgoing heartbeat).

        Returns:
            The new status.
        """
        bank, limits, now = self._tracker.update(hub)
        if not bank.stale:
            self._last_fresh = bank
        if fresh_data and not bank.stale:
            self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        present = self._monitor.check(now) if self._monitor else None
        self._status = InverterStatus(
            bank=bank, limits=limits, heartbeat=self._heartbeat, inverter_present=present, updated_at=now
        )
        self._tracker.log_state(self._status)
        self.store.update(self._encode())
        for listener in self._listeners:
            listener(self._status)
        self.refreshed.set()
        return self._status

    def _on_write(self, address: int, values: Sequence[int]) -> None:
        if self._monitor is None or self._heartbeat_address is None:
            return
        index = self._heartbeat_address - address
        if 0 <= index < len(values):
            self._monitor.observe(values[index], self._clock())

    def _encode(self) -> RegisterImage:
        # Stale: limits 0 and status/alarm bits say so, measurements keep their last fresh values.
        return self.register_map.encode(self._status, last_fresh=self._last_fresh)

    def _client_image(self) -> dict[int, int]:
        return self._encode()[RegisterKind.HOLDING]

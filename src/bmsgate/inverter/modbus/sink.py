"""`ModbusSink`: the inverter bridge over Modbus — the controller's status → register map → endpoint.

The bank and its limits come from the :class:`~bmsgate.inverter.controller.InverterController` (the
same status the CAN output encodes). One task notes every new status, and at least every
``refresh_interval`` so a status that stopped coming ages into the safe (stale) image. The register
image is encoded from the newest status when it is next read (a master's request, the client writer,
:attr:`ModbusSink.status`): a bank of eight packs brings eight statuses a second, an inverter reads about
once, and a read never sees an image older than the newest status (its age judged at the read).
The endpoint (our TCP server, tcp.py; pymodbus's RTU server or client writer, server.py) runs beside it
and never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from bmsgate.errors import ConfigError
from bmsgate.inverter.controller import InverterController, StatusSubscription
from bmsgate.inverter.modbus.heartbeat import HeartbeatMonitor
from bmsgate.inverter.modbus.registermap import RegisterImage, RegisterKind, RegisterMap, load_register_map
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.store import RegisterStore
from bmsgate.inverter.modbus.tcp import ModbusTcpServer
from bmsgate.inverter.status import InverterStatus, expired
from bmsgate.runtime.hub import SnapshotHub

__all__ = ["ModbusEndpoint", "ModbusSink"]

_LOGGER = logging.getLogger(__name__)


class ModbusEndpoint(Protocol):
    """Something that runs until cancelled, presenting or pushing the register image."""

    async def run(self) -> None:
        """Serve or write until cancelled."""


class ModbusSink:
    """Presents the battery bank to an inverter over Modbus.

    Args:
        settings: the ``outputs.modbus`` configuration.
        controller: the inverter controller whose status this output encodes.
        register_map: a compiled map; loaded from ``settings.register_map`` when omitted.
        clock: monotonic clock (default: the controller's, which is the hub's).
    """

    name = "modbus"

    def __init__(
        self,
        settings: ModbusSettings,
        controller: InverterController,
        *,
        register_map: RegisterMap | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.controller = controller
        self._clock = clock or controller.clock
        self._status = controller.status
        self._listeners: list[Callable[[InverterStatus], None]] = []
        self.refreshed = asyncio.Event()
        """Set after every status taken (cleared by whoever waits on it); the registers encode it from then on."""

        self.register_map = register_map or load_register_map(settings.register_map)
        self._monitor: HeartbeatMonitor | None = None
        if self.register_map.heartbeat_in is not None and settings.mode != "client":
            self._monitor = HeartbeatMonitor(settings.heartbeat_in_timeout, self._clock())
            controller.watch(self._monitor)
        self._due = False
        """A status arrived (or time passed) since the registers were last encoded."""
        self.store = RegisterStore(self.register_map, on_write=self._on_write, before_read=self._encode_if_due)
        self.store.update(self._encode())
        self.endpoint: ModbusEndpoint
        if settings.mode == "tcp":
            self.endpoint = ModbusTcpServer(settings, self.store)
        else:
            # pymodbus (RTU framing, the client) loads only for these modes: a TCP server is our own.
            from bmsgate.inverter.modbus import server  # noqa: PLC0415

            if settings.mode == "client":
                self.endpoint = server.ModbusClientWriter(settings, self._client_image)
            else:
                self.endpoint = server.ModbusServer(settings, self.store)

    # -- what other outputs read --------------------------------------------------------------------

    @property
    def status(self) -> InverterStatus:
        """The status the registers encode (the controller's, unless it went stale here)."""
        self._encode_if_due()
        return self._status

    def add_listener(self, callback: Callable[[InverterStatus], None]) -> None:
        """Call `callback` with every status encoded (it must return quickly and not raise)."""
        self._listeners.append(callback)

    def swap_item(self, item: object) -> object:
        """Encode with another register map from the next refresh on, without restarting the server.

        The datastore switches to the new map's addresses at once; masters keep their connections.

        Args:
            item: a compiled :class:`~bmsgate.inverter.modbus.registermap.RegisterMap`.

        Returns:
            The register map used until now.

        Raises:
            ConfigError: `item` is not a register map.
        """
        if not isinstance(item, RegisterMap):
            raise ConfigError(
                f"a Modbus output takes a register map, not {type(item).__name__}", key_path="outputs.modbus"
            )
        previous = self.register_map
        self.register_map = item
        if self._monitor is None and item.heartbeat_in is not None and self.settings.mode != "client":
            self._monitor = HeartbeatMonitor(self.settings.heartbeat_in_timeout, self._clock())
            self.controller.watch(self._monitor)
        self.store.use(item)
        self.store.update(self._encode())
        _LOGGER.info("Modbus: register map %s replaces %s", item.name, previous.name)
        return previous

    # -- running ------------------------------------------------------------------------------------

    async def run(self, hub: SnapshotHub) -> None:
        """Encode the controller's status and serve/write until cancelled (`hub` is the controller's business)."""
        del hub
        with self.controller.channel.subscribe() as subscription:
            self.refresh()
            async with asyncio.TaskGroup() as group:
                group.create_task(self.endpoint.run(), name=f"{self.name}-endpoint")
                group.create_task(self._refresh_loop(subscription), name=f"{self.name}-refresh")

    async def _refresh_loop(self, subscription: StatusSubscription) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await subscription.get_until(loop.time() + self.controller.settings.refresh_interval)
            self._take_status()

    def _take_status(self) -> None:
        if self._listeners:
            # Listeners are promised every status: encode now.
            self.refresh()
        else:
            self._due = True
            self.refreshed.set()

    def _encode_if_due(self) -> None:
        if self._due:
            self.refresh()

    def refresh(self) -> InverterStatus:
        """Encode the controller's latest status into the registers now.

        A status older than the controller's ``status_timeout`` counts as stale here (the controller
        stopped): limits 0 and the status bits say so.

        Returns:
            The status the registers encode.
        """
        self._due = False
        status = self.controller.status
        if status.age(self._clock()) > self.controller.settings.status_timeout:
            status = expired(status)
        self._status = status
        self.store.update(self._encode())
        for listener in self._listeners:
            listener(status)
        self.refreshed.set()
        return status

    def _on_write(self, address: int, values: Sequence[int]) -> None:
        heartbeat = self.register_map.heartbeat_in
        if self._monitor is None or heartbeat is None:
            return
        index = heartbeat.address - address
        if 0 <= index < len(values):
            self._monitor.observe(values[index], self._clock())

    def _encode(self) -> RegisterImage:
        # Stale: limits 0 and status/alarm bits say so, measurements keep their last fresh values.
        return self.register_map.encode(self._status, last_fresh=self._status.last_fresh)

    def _client_image(self) -> dict[int, int]:
        self._encode_if_due()
        return self._encode()[RegisterKind.HOLDING]

"""The supervisor: every poller and output in one TaskGroup, with backoff and a clean shutdown.

A failing battery backs off and retries without disturbing the others; a failing output is restarted
on its own; a slow output never blocks a poller (outputs read the hub, which never waits for them).
A battery becoming unavailable is logged once at WARNING, its recovery once at INFO.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import Final, Protocol, runtime_checkable

from bmsgate.errors import AuthenticationError, DeviceError
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.backoff import Backoff, exponential_delay
from bmsgate.runtime.client import BatteryClient, LinkStatistics
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.slots import ConnectionSlots

__all__ = ["BatteryRuntime", "Sink", "Supervisor"]

_LOGGER = logging.getLogger(__name__)
_MAX_BACKOFF: Final = 300.0
_SINK_BACKOFF_START: Final = 1.0
_SINK_BACKOFF_MAX: Final = 60.0
_CLOSE_TIMEOUT: Final = 1.0


@runtime_checkable
class Sink(Protocol):
    """An output: runs until cancelled, owns its reconnects."""

    name: str

    async def run(self, hub: SnapshotHub) -> None:
        """Consume the hub (forever)."""


@dataclasses.dataclass(slots=True)
class BatteryRuntime:
    """One battery as the supervisor runs it."""

    battery_id: str
    name: str
    client: BatteryClient
    poll_interval: float
    stale_after: float
    slots: ConnectionSlots | None = None
    """Shared connection slots (time-slicing) when the transport's adapter is oversubscribed."""
    available: bool | None = None
    consecutive_failures: int = 0


class _Shutdown(Exception):
    """Raised inside the TaskGroup to end it."""


class Supervisor:
    """Runs pollers and sinks; also the control path outputs use to switch MOSFETs."""

    def __init__(
        self,
        batteries: list[BatteryRuntime],
        sinks: list[Sink],
        *,
        hub: SnapshotHub | None = None,
        max_backoff: float = _MAX_BACKOFF,
        sink_backoff: float = _SINK_BACKOFF_START,
        jitter: float = 0.1,
    ) -> None:
        self.hub = hub or SnapshotHub()
        self.batteries = {battery.battery_id: battery for battery in batteries}
        self.sinks = sinks
        self._max_backoff = max_backoff
        self._sink_backoff = sink_backoff
        self._jitter = jitter
        self._stop = asyncio.Event()
        self._random = random.Random()
        for battery in batteries:
            self.hub.register(battery.battery_id, stale_after=battery.stale_after)

    # -- lifecycle --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask `run` to finish (signal-handler safe on the loop thread)."""
        self._stop.set()

    async def run(self, *, duration: float | None = None) -> None:
        """Run until `request_stop` (or for `duration` seconds)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.hub.run(), name="hub-staleness")
                for battery in self.batteries.values():
                    group.create_task(self._poll_forever(battery), name=f"poll-{battery.battery_id}")
                for sink in self.sinks:
                    group.create_task(self._run_sink(sink), name=f"sink-{sink.name}")
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=duration)
                except TimeoutError:
                    _LOGGER.info("run time of %.0f s reached", duration or 0.0)
                _LOGGER.info("shutting down")
                raise _Shutdown  # noqa: TRY301 - ends the TaskGroup, caught right below
        except* _Shutdown:
            pass

    # -- pollers ----------------------------------------------------------------------------------

    def link_stats(self, battery_id: str) -> LinkStatistics | None:
        """Link statistics of one battery (for outputs)."""
        battery = self.batteries.get(battery_id)
        return battery.client.stats if battery else None

    async def poll_once(self, battery: BatteryRuntime) -> BatterySnapshot:
        """One poll, through the shared slots when there are any."""
        if battery.slots is None:
            return await battery.client.read()
        async with battery.slots.slot():
            return await battery.client.read()

    async def _poll_forever(self, battery: BatteryRuntime) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    snapshot = await self.poll_once(battery)
                except AuthenticationError as exc:
                    _LOGGER.error(  # noqa: TRY400 - an expected condition: no traceback
                        "%s: %s; not retrying until the configuration changes", battery.battery_id, exc
                    )
                    battery.available = False
                    return
                except DeviceError as exc:
                    delay = self._failed(battery, exc)
                except Exception:
                    # A bug must not take the gateway down: log it once per streak and back off.
                    if battery.consecutive_failures == 0:
                        _LOGGER.exception("%s: unexpected error while polling", battery.battery_id)
                    delay = self._failed(battery, None)
                else:
                    self._succeeded(battery)
                    self.hub.publish(snapshot)
                    delay = battery.poll_interval
                await asyncio.sleep(max(0.0, started + delay - loop.time()))
        finally:
            await self._close_quietly(battery)

    def _failed(self, battery: BatteryRuntime, error: DeviceError | None) -> float:
        battery.consecutive_failures += 1
        if battery.available is not False:
            _LOGGER.warning("%s: unavailable: %s", battery.battery_id, error or "internal error")
            battery.available = False
        else:
            _LOGGER.debug("%s: still unavailable: %s", battery.battery_id, error)
        return exponential_delay(
            battery.consecutive_failures - 1,
            initial=battery.poll_interval,
            maximum=max(self._max_backoff, battery.poll_interval),
            jitter=self._jitter,
            rng=self._random,
        )

    def _succeeded(self, battery: BatteryRuntime) -> None:
        if battery.available is False:
            _LOGGER.info(
                "%s: available again after %d failed poll%s",
                battery.battery_id,
                battery.consecutive_failures,
                "" if battery.consecutive_failures == 1 else "s",
            )
        battery.available = True
        battery.consecutive_failures = 0

    async def _close_quietly(self, battery: BatteryRuntime) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await battery.client.close()
        except (TimeoutError, DeviceError) as exc:
            _LOGGER.debug("%s: close failed: %s", battery.battery_id, exc)

    # -- sinks ------------------------------------------------------------------------------------

    async def _run_sink(self, sink: Sink) -> None:
        backoff = Backoff(self._sink_backoff, _SINK_BACKOFF_MAX, jitter=self._jitter, rng=self._random)
        while True:
            try:
                await sink.run(self.hub)
            except Exception as exc:  # noqa: BLE001 - one output's failure must never stop the others
                if not backoff.failures:
                    _LOGGER.warning("output %s failed: %s; retrying", sink.name, exc)
                else:
                    _LOGGER.debug("output %s failed again: %s", sink.name, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            return

    # -- control (used by outputs such as Home Assistant switches) ---------------------------------

    async def set_mosfets(
        self, battery_id: str, *, charge: bool | None = None, discharge: bool | None = None
    ) -> BatterySnapshot:
        """Switch MOSFETs on one battery, confirm by reading back, publish the confirmed state.

        Raises:
            CommandRefused: the BMS refused or did not confirm.
            DeviceError: unknown battery or a link failure.
        """
        battery = self.batteries.get(battery_id)
        if battery is None:
            raise DeviceError("no such battery", battery_id=battery_id)
        if battery.slots is None:
            snapshot = await battery.client.set_mosfets(charge=charge, discharge=discharge)
        else:
            async with battery.slots.slot():
                snapshot = await battery.client.set_mosfets(charge=charge, discharge=discharge)
        self.hub.publish(snapshot)
        return snapshot

"""Helpers for the CAN tests: snapshots, statuses, and an inverter simulator on python-can's virtual bus."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import can

from bmsgate.inverter.bank import PackInput, aggregate
from bmsgate.inverter.can.profiles import CanProfile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import CanSink
from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.limits import LimitEngine, LimitSettings, temperature_derating
from bmsgate.inverter.settings import InverterSettings
from bmsgate.inverter.status import InverterStatus
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub

_channels = itertools.count()


def channel_name() -> str:
    """A virtual bus channel no other test uses."""
    return f"bmsgate-test-{next(_channels)}-{time.monotonic_ns()}"


def make_snapshot(battery_id: str = "a", **changes: Any) -> BatterySnapshot:
    """A healthy 16s LiFePO4 pack at 50 %, discharging gently."""
    values: dict[str, Any] = {
        "battery_id": battery_id,
        "timestamp": 0.0,
        "voltage": 52.8,
        "current": -12.3,
        "soc": 50.0,
        "soh": 98.0,
        "remaining_capacity": 50.0,
        "full_capacity": 100.0,
        "cycles": 42,
        "cell_voltages": (3.30,) * 15 + (3.31,),
        "temperatures": (20.0, 22.0),
        "mosfet_temperature": 30.0,
        "charge_enabled": True,
        "discharge_enabled": True,
    }
    values.update(changes)
    return BatterySnapshot(**values)


def make_status(
    *snapshots: BatterySnapshot, stale: bool = False, settings: LimitSettings | None = None
) -> InverterStatus:
    """A status for these packs (all stale when `stale`)."""
    packs = [PackInput(s.battery_id, s, stale, 1.0) for s in snapshots or (make_snapshot(),)]
    bank = aggregate(packs)
    engine = LimitEngine(settings)
    if stale:
        engine.update(aggregate([PackInput(p.battery_id, p.snapshot, False, 1.0) for p in packs]), 0.0)
    derating = temperature_derating(bank, settings or LimitSettings())
    return InverterStatus(bank=bank, limits=engine.update(bank, 1.0), temperature_derating=derating)


class InverterSimulator:
    """An inverter on the virtual bus: records and decodes every frame, sends keep-alives or requests.

    Decoding reads the profile's DBC (the files we ship) with bmsgate's reader, which test_dbc.py checks
    against cantools, so a test checks the wire; test_dialects.py decodes without any DBC.
    """

    def __init__(self, channel: str, profile: CanProfile) -> None:
        self.profile = profile
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.latest: dict[int, dict[str, float]] = {}
        self.latest_raw: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._stop.is_set():
            message = self.bus.recv(0.02)
            if message is None:
                continue
            data = bytes(message.data)
            layout = self.profile.database.messages.get(message.arbitration_id)
            with self.lock:
                self.arrivals[message.arbitration_id].append(message.timestamp)
                self.latest_raw[message.arbitration_id] = data
                if layout is not None:
                    self.latest[message.arbitration_id] = layout.decode(data[: layout.length])

    def send(self, arbitration_id: int, data: bytes = bytes(8)) -> None:
        self.bus.send(can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False))

    def count(self, arbitration_id: int) -> int:
        with self.lock:
            return len(self.arrivals[arbitration_id])

    def signals(self, arbitration_id: int) -> dict[str, float]:
        with self.lock:
            return dict(self.latest[arbitration_id])

    def times(self, arbitration_id: int) -> list[float]:
        with self.lock:
            return list(self.arrivals[arbitration_id])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.bus.shutdown()

    @contextlib.asynccontextmanager
    async def sending(self, arbitration_id: int, period: float) -> AsyncIterator[None]:
        """Send `arbitration_id` every `period` s while the block runs (keep-alive / request)."""

        async def loop() -> None:
            while True:
                self.send(arbitration_id)
                await asyncio.sleep(period)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_for(
    condition: Callable[[], bool],
    timeout: float = 5.0,
    interval: float = 0.005,
    what: Callable[[], str] = lambda: "",
) -> None:
    """Wait until `condition()` holds (fails the test after `timeout` s, showing `what()`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time {what()}")
        await asyncio.sleep(interval)


def make_controller(
    batteries: tuple[str, ...] = ("a",), *, clock: Callable[[], float] = time.monotonic, **changes: Any
) -> InverterController:
    """A controller for the bank `batteries`, refreshing fast enough for tests that run in real time."""
    values: dict[str, Any] = {"batteries": batteries, "refresh_interval": 0.05, "status_timeout": 5.0}
    values.update(changes)
    return InverterController(InverterSettings(**values), clock=clock)


def can_sink(
    settings: CanSettings,
    *,
    batteries: tuple[str, ...] = ("a",),
    clock: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> CanSink:
    """A CAN sink with its own controller over `batteries`."""
    return CanSink(settings, make_controller(batteries, clock=clock), **kwargs)


@contextlib.asynccontextmanager
async def running(sink: CanSink, hub: SnapshotHub, *, controller: bool = True) -> AsyncIterator[CanSink]:
    """Run the sink (and its controller, unless the test runs that itself) until the block ends."""
    tasks = []
    if controller:
        # First, as in the gateway: the sink's first frames then encode a computed status.
        tasks.append(asyncio.create_task(sink.controller.run(hub), name="test-inverter-controller"))
    tasks.append(asyncio.create_task(sink.run(hub), name="test-can-sink"))
    try:
        yield sink
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

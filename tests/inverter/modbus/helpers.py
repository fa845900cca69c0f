"""Helpers for the Modbus bridge tests: snapshots, a fake clock, free ports, a running sink, CRC."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.settings import InverterSettings
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
        "cell_voltages": (3.30,) * 16,
        "temperatures": (20.0, 22.0),
        "mosfet_temperature": 30.0,
        "charge_enabled": True,
        "discharge_enabled": True,
    }
    values.update(changes)
    return BatterySnapshot(**values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_controller(
    batteries: tuple[str, ...] = ("a",), *, clock: Callable[[], float] = time.monotonic, **changes: Any
) -> InverterController:
    """A controller for the bank `batteries`, refreshing fast enough for tests that run in real time."""
    values: dict[str, Any] = {"batteries": batteries, "refresh_interval": 0.02, "status_timeout": 5.0}
    values.update(changes)
    return InverterController(InverterSettings(**values), clock=clock)


async def wait_refresh(sink: ModbusSink, timeout: float = 3.0) -> None:
    """Wait until the registers encode a status the controller computed after this call."""
    computed = sink.controller.status.sequence
    async with asyncio.timeout(timeout):
        while sink.status.sequence <= computed:
            sink.refreshed.clear()
            await sink.refreshed.wait()


@contextlib.asynccontextmanager
async def running_sink(
    settings: ModbusSettings,
    hub: SnapshotHub,
    clock: FakeClock | None = None,
    *,
    controller: InverterController | None = None,
) -> AsyncIterator[ModbusSink]:
    """Run a sink and its controller until the block ends; waits until a server endpoint listens.

    A `controller` given is shared and run by the caller; otherwise the sink gets its own over bank ``a``.
    """
    own = controller is None
    controller = controller or make_controller(clock=clock or time.monotonic)
    sink = ModbusSink(settings, controller)
    tasks = []
    if own:
        tasks.append(asyncio.create_task(controller.run(hub), name="test-inverter-controller"))
    tasks.append(asyncio.create_task(sink.run(hub), name="test-modbus-sink"))
    try:
        listening = getattr(sink.endpoint, "listening", None)
        if isinstance(listening, asyncio.Event):
            await asyncio.wait_for(listening.wait(), 5)
        yield sink
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def modbus_crc(frame: bytes) -> bytes:
    """CRC-16/MODBUS of `frame`, little-endian as it goes on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")

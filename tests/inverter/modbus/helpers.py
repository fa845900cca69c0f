"""Helpers for the Modbus bridge tests: snapshots, a fake clock, free ports, a running sink, CRC."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from bmsgate.inverter.modbus.server import ModbusServer
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
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


async def wait_refresh(sink: ModbusSink, timeout: float = 3.0) -> None:
    """Wait for the next register refresh (started after this call)."""
    sink.refreshed.clear()
    await asyncio.wait_for(sink.refreshed.wait(), timeout)


@contextlib.asynccontextmanager
async def running_sink(
    settings: ModbusSettings, hub: SnapshotHub, clock: FakeClock | None = None
) -> AsyncIterator[ModbusSink]:
    """Run a sink until the block ends; waits until a server endpoint listens."""
    sink = ModbusSink(settings, clock=clock or time.monotonic)
    task = asyncio.create_task(sink.run(hub), name="test-modbus-sink")
    try:
        if isinstance(sink.endpoint, ModbusServer):
            await asyncio.wait_for(sink.endpoint.listening.wait(), 5)
        yield sink
    finally:
        task.cancel()
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

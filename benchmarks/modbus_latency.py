"""Modbus TCP latency of the inverter bridge.

Prints:
* read latency p50/p99 of a 30-register holding read at a paced 100 requests/s (about 10 s);
* the delay from a fresh snapshot published to the hub until a client reads the updated registers.

Run: .venv/bin/python benchmarks/modbus_latency.py [--seconds 10] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import time

from pymodbus.client import AsyncModbusTcpClient

from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.modbus.tcp import ModbusTcpServer
from bmsgate.inverter.settings import InverterSettings
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


def snapshot(soc: float) -> BatterySnapshot:
    return BatterySnapshot(
        battery_id="a",
        timestamp=time.time(),
        voltage=52.8,
        current=-12.3,
        soc=soc,
        full_capacity=100.0,
        cell_voltages=(3.3,) * 16,
        temperatures=(21.0,),
        charge_enabled=True,
        discharge_enabled=True,
    )


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def main(seconds: float, rate: float, rounds: int) -> None:
    hub = SnapshotHub()
    settings = ModbusSettings(mode="tcp", port=free_port())
    controller = InverterController(InverterSettings(batteries=("a",), refresh_interval=1.0))
    sink = ModbusSink(settings, controller)
    controller_task = asyncio.create_task(controller.run(hub))
    task = asyncio.create_task(sink.run(hub))
    assert isinstance(sink.endpoint, ModbusTcpServer)
    await sink.endpoint.listening.wait()
    hub.publish(snapshot(50.0))
    client = AsyncModbusTcpClient("127.0.0.1", port=settings.port, timeout=2, retries=0, reconnect_delay=0)
    await client.connect()
    try:
        # 1. paced read latency
        latencies: list[float] = []
        interval = 1.0 / rate
        start = time.perf_counter()
        count = int(seconds * rate)
        for index in range(count):
            due = start + index * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            response = await client.read_holding_registers(0x0100, count=30, slave=1)
            latencies.append(time.perf_counter() - sent)
            assert not response.isError()
        elapsed = time.perf_counter() - start
        print(f"30-register read, {count} requests in {elapsed:.1f} s ({count / elapsed:.0f}/s):")
        print(
            f"  p50 {statistics.median(latencies) * 1e3:.2f} ms  p99 {percentile(latencies, 0.99) * 1e3:.2f} ms"
            f"  max {max(latencies) * 1e3:.2f} ms"
        )

        # 2. publish -> readable
        delays: list[float] = []
        for index in range(rounds):
            soc = float(index % 90 + 5)
            published = time.perf_counter()
            hub.publish(snapshot(soc))
            while True:
                response = await client.read_holding_registers(0x0100, count=1, slave=1)
                if response.registers[0] == int(soc):
                    break
            delays.append(time.perf_counter() - published)
            await asyncio.sleep(0.005)
        print(f"snapshot published -> registers readable (including the read), {rounds} rounds:")
        print(
            f"  p50 {statistics.median(delays) * 1e3:.2f} ms  p99 {percentile(delays, 0.99) * 1e3:.2f} ms"
            f"  max {max(delays) * 1e3:.2f} ms"
        )
    finally:
        client.close()
        for running in (task, controller_task):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.seconds, arguments.rate, arguments.rounds))

"""MQTT output cost and latency for one 16-cell battery.

Prints the discovery cost (messages/bytes once per connection), messages and bytes per poll, and
the latency from ``hub.publish(snapshot)`` to delivery of the state message at a subscribing client
(p50/p99), for QoS 0 and QoS 1. Polls are sent one after another (each waits for its delivery), so
the latency is the pipeline's own, without queueing behind earlier polls.

Usage: python benchmarks/mqtt_latency.py [--polls 1000] [--url mqtt://host:port]
(without --url an embedded broker is started: mosquitto if installed, else amqtt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time

import aiomqtt

from bmsgate.homeassistant import BatteryInfo, HomeAssistantSink, LinkStats, MqttSettings
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.mqtt.broker import EmbeddedBroker
from bmsgate.runtime.hub import SnapshotHub

CELLS = 16


def make_snapshot(i: int, t0: float) -> BatterySnapshot:
    return BatterySnapshot(
        battery_id="battery1",
        timestamp=t0 + i,
        protocol="jk",
        voltage=53.1 + (i % 7) * 0.01,
        current=-12.5 + (i % 5) * 0.1,
        soc=80.0,
        soh=99.0,
        remaining_capacity=224.0,
        full_capacity=280.0,
        cycles=42,
        cell_voltages=tuple(3.3 + ((i + n) % 9) * 0.001 for n in range(CELLS)),
        temperatures=(21.0, 21.5, 22.0, 22.5),
        mosfet_temperature=30.0,
        alarms=frozenset({Alarm.LOW_SOC}) if i % 2 else frozenset(),
        charge_enabled=True,
        discharge_enabled=True,
        balancing_cells=(3,) if i % 3 else (),
        device=DeviceInfo(manufacturer="Jikong", model="BD6A20S10P", software_version="11.26", serial_number="1"),
    )


async def measure(url: str, qos: int, polls: int) -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        settings = MqttSettings.model_validate({"url": url, "qos": qos, "state_dir": state_dir})
        hub = SnapshotHub()
        t0 = time.time() - polls - 10
        hub.publish(make_snapshot(0, t0))
        sink = HomeAssistantSink(
            settings,
            [BatteryInfo("battery1", "Battery 1", "C8:47:8C:00:11:22", "jk")],
            link_stats=lambda _: LinkStats(0.99, -70, None),
        )
        received: asyncio.Queue[float] = asyncio.Queue()
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        async with aiomqtt.Client(host, int(port)) as client:
            await client.subscribe("bmsgate/battery1/state", qos=qos)

            async def listen() -> None:
                async for message in client.messages:
                    if not message.retain:
                        received.put_nowait(time.perf_counter())

            listener = asyncio.create_task(listen())
            task = asyncio.create_task(sink.run(hub))
            await asyncio.wait_for(sink.connected.wait(), 10)
            await asyncio.wait_for(received.get(), 10)
            discovery_msgs, discovery_bytes = sink.stats.messages, sink.stats.bytes
            latencies = []
            for i in range(1, polls + 1):
                start = time.perf_counter()
                hub.publish(make_snapshot(i, t0))
                latencies.append(await asyncio.wait_for(received.get(), 10) - start)
            per_poll_msgs = (sink.stats.messages - discovery_msgs) / polls
            per_poll_bytes = (sink.stats.bytes - discovery_bytes) / polls
            for running in (task, listener):
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(
        f"QoS {qos}: discovery {discovery_msgs} msgs / {discovery_bytes / 1024:.1f} KiB per connection; "
        f"per poll {per_poll_msgs:.2f} msgs / {per_poll_bytes:.0f} B; "
        f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1] * 1000:.2f} ms ({polls} polls)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--url", help="existing broker (mqtt://host:port); default: embedded")
    args = parser.parse_args()
    if args.url:
        for qos in (0, 1):
            await measure(args.url, qos, args.polls)
        return
    async with EmbeddedBroker() as broker:
        print(f"broker: embedded {broker.kind} at {broker.url}; battery: {CELLS} cells, 4 NTCs, all alarms")
        for qos in (0, 1):
            await measure(broker.url, qos, args.polls)


if __name__ == "__main__":
    asyncio.run(main())

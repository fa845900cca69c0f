"""Fleet agent footprint and message sizes, with the real gateway and simulated batteries.

Footprint: the same gateway (8 simulated 16-cell packs polled every 10 s, the inverter controller with its
Modbus TCP output, no console) runs twice in its own process, once without and once with ``outputs.fleet``
(default interval 10 s) connected to a local Mosquitto. After a warm-up, each process measures its RSS and
CPU time over the same window; the difference is the agent's cost.

Sizes: the telemetry message of those 8 packs (and of 1), as sent (compact JSON) and as stored in the
offline buffer (zlib), per message, per day at the default interval, and 48 h of buffer.

Run: .venv/bin/python benchmarks/fleet_agent.py [--seconds 60] [--warmup 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.app.ports import free_tcp_port
from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.credentials import GatewayCredentials, write_credentials
from bmsgate.mqtt.broker import EmbeddedBroker
from bmsgate.runtime.hub import SnapshotHub

DAY = 86_400
INTERVAL = 10.0


def _config(directory: Path, credentials: Path | None, batteries: int) -> dict[str, Any]:
    packs = [
        {
            "id": f"pack{index}",
            "protocol": "jbd",
            "poll_interval": INTERVAL,
            "transport": {"type": "simulator", "cells": 16, "capacity": 280, "seed": index, "drift_cell": 3},
        }
        for index in range(batteries)
    ]
    outputs: dict[str, Any] = {
        "console": {"enabled": False},
        "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": free_tcp_port("127.0.0.1")},
    }
    if credentials is not None:
        outputs["fleet"] = {"credentials": str(credentials), "interval": INTERVAL}
    return {"name": "bench", "state_dir": str(directory / "state"), "batteries": packs, "outputs": outputs}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _child(directory: Path, credentials: Path | None, warmup: float, seconds: float) -> dict[str, Any]:
    config = config_from_mapping(_config(directory, credentials, 8))
    gateway = build_gateway(config, sink_builders=configured_sink_builders())
    task = asyncio.create_task(gateway.supervisor.run())
    await asyncio.sleep(warmup)
    rss_start, cpu_start, wall_start = _rss_kib(), _cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    result: dict[str, Any] = {
        "rss_start_kib": rss_start,
        "rss_end_kib": _rss_kib(),
        "cpu_s": _cpu_s() - cpu_start,
        "wall_s": time.monotonic() - wall_start,
    }
    agent = next((sink for sink in gateway.supervisor.sinks if isinstance(sink, FleetAgent)), None)
    if agent is not None:
        result["sent"] = agent.stats.sent
        result["sizes"] = {str(count): _sizes(agent, gateway.hub, count) for count in (1, 8)}
    gateway.supervisor.request_stop()
    await task
    return result


def _sizes(agent: FleetAgent, hub: SnapshotHub, count: int) -> dict[str, int]:
    partial = SnapshotHub()
    for battery_id in hub.battery_ids()[:count]:
        snapshot = hub.latest(battery_id)
        if snapshot is not None:
            partial.publish(snapshot)
    payload = agent.telemetry(partial)(123_456)
    return {"json": len(payload), "stored": len(zlib.compress(payload, 6))}


def _run_child(directory: Path, credentials: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(directory), str(credentials or "")]
    command += ["--warmup", str(args.warmup), "--seconds", str(args.seconds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


async def _main(args: argparse.Namespace) -> None:
    async with EmbeddedBroker() as broker:
        with tempfile.TemporaryDirectory(prefix="bmsgate-bench-") as temp:
            directory = Path(temp)
            credentials = directory / "bench.json"
            write_credentials(
                GatewayCredentials(gateway="bench", broker_url=broker.url, username="bench", password="x"),  # type: ignore[arg-type]
                credentials,
            )
            (directory / "without").mkdir()
            (directory / "with").mkdir()
            without = await asyncio.to_thread(_run_child, directory / "without", None, args)
            with_agent = await asyncio.to_thread(_run_child, directory / "with", credentials, args)
    rss = with_agent["rss_end_kib"] - without["rss_end_kib"]
    cpu_without = 100 * without["cpu_s"] / without["wall_s"]
    cpu_with = 100 * with_agent["cpu_s"] / with_agent["wall_s"]
    print(f"window {args.seconds:.0f} s after {args.warmup:.0f} s warm-up; 8 simulated 16-cell packs, poll 10 s")
    print(
        f"  RSS without fleet: {without['rss_end_kib'] / 1024:.1f} MiB, "
        f"with: {with_agent['rss_end_kib'] / 1024:.1f} MiB"
    )
    print(f"  extra RSS: {rss / 1024:.2f} MiB (target <= 10 MiB)")
    print(f"  CPU without: {cpu_without:.2f} % of one core, with: {cpu_with:.2f} %")
    print(f"  extra CPU: {cpu_with - cpu_without:.2f} % of one core (target <= 1 %)")
    print(f"  fleet messages (telemetry + events) acknowledged in the window: {with_agent['sent']}")
    per_day = DAY / INTERVAL
    for count, size in with_agent["sizes"].items():
        print(
            f"  telemetry, {count} battery(ies): {size['json']} B/message, {size['json'] * per_day / 1e6:.1f} MB/day "
            f"at {INTERVAL:g} s; buffered (zlib) {size['stored']} B, 48 h = {size['stored'] * 2 * per_day / 1e6:.1f} MB"
        )


def main() -> None:
    """Parse arguments and run the parent or a measured child."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--child", nargs=2, metavar=("DIR", "CREDENTIALS"))
    args = parser.parse_args()
    if args.child:
        directory, credentials = Path(args.child[0]), Path(args.child[1]) if args.child[1] else None
        print(json.dumps(asyncio.run(_child(directory, credentials, args.warmup, args.seconds))))
    else:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()

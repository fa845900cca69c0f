"""Runtime figures for 8 simulated batteries polled every second.

1. CPU time per snapshot, from poll (simulated BMS encoding + frame assembly + decode) through the hub
   to the console output (plain lines into a buffer). The simulated BMS's own work is included, so
   the figure is an upper bound for the gateway's share.
2. Latency from a decoded snapshot being published to its delivery to a hub subscriber (p50/p99).
3. Resident memory of a real `bmsgate run` process with 8 simulated batteries (peak VmRSS).

Run: .venv/bin/python benchmarks/pipeline.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console

from bmsgate.app.config import config_from_mapping
from bmsgate.app.gateway import build_gateway, run_gateway
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub

BATTERIES = 8
TARGET_CPU_MS = 1.0
TARGET_RSS_MB = 80.0
TARGET_P99_MS = 5.0


def _config(poll_interval: float) -> dict[str, object]:
    batteries = [
        {
            "id": f"pack{index}",
            "protocol": "jbd",
            "poll_interval": poll_interval,
            "transport": {"type": "simulator", "cells": 16, "ntc_count": 3, "seed": index, "time_scale": 10},
        }
        for index in range(BATTERIES)
    ]
    return {"batteries": batteries, "outputs": {"console": {"mode": "plain", "interval": 1}}}


class _TimedHub(SnapshotHub):
    """Records when each snapshot was published."""

    def __init__(self) -> None:
        super().__init__()
        self.published: dict[int, float] = {}

    def publish(self, snapshot: BatterySnapshot) -> None:
        self.published[id(snapshot)] = time.perf_counter()
        super().publish(snapshot)


async def _measure_pipeline(seconds: float) -> tuple[float, int, list[float], tuple[float, int]]:
    config = config_from_mapping(_config(1.0))
    hub = _TimedHub()
    gateway = build_gateway(config, console=Console(file=io.StringIO(), width=200), hub=hub)
    latencies: list[float] = []
    # Steady state: CPU from the moment every battery has delivered once (definitions loaded and
    # compiled, connections up) to the end, over the snapshots delivered in that time.
    seen: set[str] = set()
    steady: list[float] = []
    steady_count = 0

    async def subscriber() -> None:
        nonlocal steady_count
        with hub.subscribe("latency", replay=False) as subscription:
            while True:
                update = await subscription.get()
                if update.snapshot is not None and id(update.snapshot) in hub.published:
                    latencies.append(time.perf_counter() - hub.published.pop(id(update.snapshot)))
                if update.snapshot is not None:
                    if steady:
                        steady_count += 1
                    seen.add(update.snapshot.battery_id)
                    if not steady and len(seen) == BATTERIES:
                        steady.append(time.process_time())

    cpu_before = time.process_time()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(subscriber())
        await run_gateway(gateway, duration=seconds)
        task.cancel()
    cpu_after = time.process_time()
    snapshots = sum(
        battery.client.stats.polls - battery.client.stats.failures for battery in gateway.supervisor.batteries.values()
    )
    return cpu_after - cpu_before, snapshots, latencies, (cpu_after - steady[0] if steady else 0.0, steady_count)


def _measure_rss(seconds: float) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(_config(1.0)))
        process = subprocess.Popen(
            [sys.executable, "-m", "bmsgate.app.cli.main", "run", "-c", str(path), "--duration", str(seconds)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak_kb = 0
        while process.poll() is None:
            try:
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.2)
        process.wait()
    return peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    cpu, snapshots, latencies, (steady_cpu, steady_snapshots) = asyncio.run(_measure_pipeline(args.seconds))
    per_snapshot_ms = cpu / max(snapshots, 1) * 1000
    print(f"{BATTERIES} batteries × 1 poll/s for {args.seconds:.0f} s: {snapshots} snapshots")
    print(
        f"CPU per snapshot (sim BMS + decode + hub + console): {per_snapshot_ms:.3f} ms (target ≤ {TARGET_CPU_MS} ms)"
    )
    if steady_snapshots:
        print(
            f"  of which steady state (after every battery's first snapshot: no loading, compiling, connecting): "
            f"{steady_cpu / steady_snapshots * 1000:.3f} ms over {steady_snapshots} snapshots"
        )
    if latencies:
        ordered = sorted(latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        print(
            f"publish → subscriber latency: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {ordered[-1] * 1000:.3f} ms "
            f"over {len(ordered)} deliveries (target p99 ≤ {TARGET_P99_MS} ms)"
        )
    rss = _measure_rss(min(args.seconds, 15.0))
    print(
        f"peak resident memory of `bmsgate run` with {BATTERIES} batteries: {rss:.1f} MB (target ≤ {TARGET_RSS_MB} MB)"
    )


if __name__ == "__main__":
    main()

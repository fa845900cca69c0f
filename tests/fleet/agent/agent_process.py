"""A gateway process for the kill -9 test: one simulated battery, the fleet agent, nothing else.

Usage: python agent_process.py CREDENTIALS BUFFER INTERVAL BACKFILL_RATE
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from bmsgate.fleet.agent.agent import AgentOptions, FleetAgent
from bmsgate.fleet.agent.wiring import broker_settings
from bmsgate.fleet.credentials import read_credentials
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


async def _feed(hub: SnapshotHub, interval: float) -> None:
    while True:
        hub.publish(
            BatterySnapshot(
                battery_id="house", timestamp=time.time(), voltage=53.1, soc=70.0, cell_voltages=(3.3,) * 16
            )
        )
        await asyncio.sleep(interval)


async def main(credentials: Path, buffer: Path, interval: float, rate: float) -> None:
    found = read_credentials(credentials)
    options = AgentOptions(
        gateway_id=found.gateway,
        broker=broker_settings(found, reconnect_max=2.0),
        buffer_path=buffer,
        interval=interval,
        backfill_rate=rate,
        packs=(),
        hardware="test process",
    )
    hub = SnapshotHub()
    agent = FleetAgent(options)
    print("started", flush=True)
    async with asyncio.TaskGroup() as group:
        group.create_task(_feed(hub, interval))
        group.create_task(agent.run(hub))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))

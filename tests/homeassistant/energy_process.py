"""A gateway that charges one battery at 10 kW, polled at 10 Hz, until it is killed.

Saves often and integrates only short gaps, so that a SIGKILL between two saves followed by a slow
restart is the worst case for the energy counters.

Usage: python energy_process.py MQTT_URL STATE_DIR
"""

from __future__ import annotations

import asyncio
import sys
import time

from bmsgate.homeassistant import BatteryInfo, HomeAssistantSink, MqttSettings
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub

SAVE_INTERVAL = 0.5
MAX_GAP = 1.0
POLL_INTERVAL = 0.1


async def poll(hub: SnapshotHub) -> None:
    while True:
        hub.publish(BatterySnapshot(battery_id="battery1", timestamp=time.time(), voltage=100.0, current=100.0))
        await asyncio.sleep(POLL_INTERVAL)


async def main(url: str, state_dir: str) -> None:
    hub = SnapshotHub()
    settings = MqttSettings.model_validate(
        {
            "url": url,
            "state_dir": state_dir,
            "keepalive": 5,
            "energy_save_interval": SAVE_INTERVAL,
            "energy_max_gap": MAX_GAP,
        }
    )
    sink = HomeAssistantSink(settings, [BatteryInfo("battery1")])
    async with asyncio.TaskGroup() as group:
        group.create_task(poll(hub), name="poll")
        group.create_task(sink.run(hub), name="sink")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

"""A minimal gateway for the last-will test: one battery, one sink, runs until killed.

Usage: python gateway_process.py MQTT_URL STATE_DIR
"""

from __future__ import annotations

import asyncio
import sys
import time

from bmsgate.homeassistant import BatteryInfo, HomeAssistantSink, MqttSettings
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


async def main(url: str, state_dir: str) -> None:
    hub = SnapshotHub()
    settings = MqttSettings.model_validate({"url": url, "state_dir": state_dir, "keepalive": 5})
    sink = HomeAssistantSink(settings, [BatteryInfo("battery1")])
    hub.publish(BatterySnapshot(battery_id="battery1", timestamp=time.time(), voltage=13.3, current=1.0))
    await sink.run(hub)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

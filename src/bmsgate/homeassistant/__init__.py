"""Home Assistant output: MQTT discovery, states, availability and optional MOSFET control.

Importing this package does not import aiomqtt; only running the sink (or the embedded broker's
client side) needs the ``[mqtt]`` extra.
"""

from bmsgate.homeassistant.settings import BatteryInfo, LinkStats, MqttSettings, TlsSettings
from bmsgate.homeassistant.sink import (
    BatteryControl,
    HomeAssistantSink,
    InverterStatusProvider,
    LinkStatsProvider,
)

__all__ = [
    "BatteryControl",
    "BatteryInfo",
    "HomeAssistantSink",
    "InverterStatusProvider",
    "LinkStats",
    "LinkStatsProvider",
    "MqttSettings",
    "TlsSettings",
]

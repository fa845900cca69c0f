"""Settings and small value types of the Home Assistant (MQTT) output.

`MqttSettings` is embedded by the main configuration under ``outputs.mqtt``. It accepts either a
mapping or a plain URL string::

    outputs:
      mqtt: mqtts://gateway:secret@broker.lan:8883

    outputs:
      mqtt:
        host: broker.lan
        port: 8883
        username: gateway
        password_env: BMSGATE_MQTT_PASSWORD
        tls: {ca_file: /etc/ssl/private-ca.pem}
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import Field, model_validator

from bmsgate.model import Alarm
from bmsgate.mqtt.settings import BrokerSettings, TlsSettings

__all__ = [
    "BatteryInfo",
    "EntityIdStyle",
    "LinkStats",
    "MqttSettings",
    "TlsSettings",
    "default_state_dir",
]

EntityIdStyle = Literal["default_entity_id", "object_id"]

_DEFAULT_PORT: Final = 1883
_DEFAULT_TLS_PORT: Final = 8883
_TOPIC_SEGMENT = re.compile(r"^[^#+\s]+$")


@dataclasses.dataclass(frozen=True, slots=True)
class BatteryInfo:
    """What the configuration says about one battery (the sink needs it before any snapshot).

    Attributes:
        battery_id: the configured id; used in topics and suggested entity ids.
        name: display name of the Home Assistant device.
        address: BLE MAC address or serial port, when known (a MAC becomes a device connection).
        protocol: name of the protocol definition (shown as the model when the BMS reports none).
        alarms: the alarms this battery's protocol can raise (one problem sensor each); None: all.
    """

    battery_id: str
    name: str | None = None
    address: str | None = None
    protocol: str | None = None
    alarms: frozenset[Alarm] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LinkStats:
    """Link statistics of one battery, as the battery client measures them.

    Attributes:
        success_rate: share of recent polls that succeeded, 0.0 to 1.0.
        rssi: received signal strength, dBm (BLE only).
        last_error: text of the most recent failure, if any.
    """

    success_rate: float | None = None
    rssi: int | None = None
    last_error: str | None = None


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/bmsgate``, else ``~/.local/state/bmsgate``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bmsgate"


class MqttSettings(BrokerSettings):
    """Broker connection and Home Assistant discovery settings (``outputs.mqtt``)."""

    # -- Home Assistant ---------------------------------------------------------------------------
    discovery: bool = True
    """Publish Home Assistant discovery configs (off: only state topics)."""
    discovery_prefix: str = "homeassistant"
    ha_status_topic: str | None = None
    """Home Assistant's birth topic; default ``<discovery_prefix>/status``."""
    base_topic: str = "bmsgate"
    gateway_id: str = "bmsgate"
    """Identifies this gateway (device identifier, discovery node id); unique per broker."""
    gateway_name: str = "bmsgate gateway"
    entity_id_style: EntityIdStyle = "default_entity_id"
    """``default_entity_id`` (HA 2025.10+) or ``object_id`` (older HA; removed in 2026.4)."""
    entity_id_prefix: str = "bms"
    """Suggested entity ids look like ``sensor.<prefix>_<battery_id>_<key>``."""
    expire_after: int | None = Field(default=None, ge=0)
    """Seconds until HA marks a value unavailable; default twice the battery's staleness budget; 0: off."""
    retain_states: bool = True
    allow_control: bool = False
    """Expose charge/discharge MOSFET switches (needs a control implementation)."""
    state_dir: Path = Field(default_factory=default_state_dir)
    """Where the energy counters are persisted (``homeassistant-state.json``)."""
    energy_max_gap: float | None = Field(default=None, gt=0)
    """Longest gap (s) between two snapshots that is still integrated; default: staleness budget."""
    energy_save_interval: float = Field(default=60.0, gt=0)
    """How often (s) the energy counters are saved. Only saved values are published, so they advance once per
    save, and a crash loses at most the energy of one interval."""
    inverter_interval: float = Field(default=10.0, gt=0)
    """How often (s) the inverter status is re-published even when no battery reports."""

    @model_validator(mode="after")
    def _check_topics(self) -> Self:
        for name in ("discovery_prefix", "base_topic", "gateway_id"):
            value: str = getattr(self, name)
            if not _TOPIC_SEGMENT.match(value) or value.startswith("/") or value.endswith("/"):
                raise ValueError(f"{name}: {value!r} is not a usable topic (no wildcards, spaces or edge '/')")
        return self

    # -- derived ----------------------------------------------------------------------------------

    @property
    def effective_client_id(self) -> str:
        """The client id used on the wire."""
        return self.client_id or f"bmsgate-{self.gateway_id}"

    @property
    def effective_ha_status_topic(self) -> str:
        """Home Assistant's birth/last-will topic."""
        return self.ha_status_topic or f"{self.discovery_prefix}/status"

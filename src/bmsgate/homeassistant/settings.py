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
from typing import Any, Final, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bmsgate.model import Alarm

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


class TlsSettings(BaseModel):
    """TLS towards the broker. With no CA file the system trust store is used."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ca_file: Path | None = None
    cert_file: Path | None = None
    """Client certificate (PEM) for brokers that authenticate clients by certificate."""
    key_file: Path | None = None
    insecure: bool = False
    """Skip host name verification (the chain is still verified). Only for testing."""

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: file not found")
        return self


class MqttSettings(BaseModel):
    """Broker connection and Home Assistant discovery settings (``outputs.mqtt``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # -- connection -------------------------------------------------------------------------------
    url: str | None = None
    """``mqtt://user:pass@host:port`` or ``mqtts://...``; explicit keys win over URL parts."""
    host: str = "localhost"
    port: int = Field(default=_DEFAULT_PORT, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps it out of the config file)."""
    client_id: str | None = None
    """MQTT client id; default ``bmsgate-<gateway_id>``."""
    keepalive: int = Field(default=30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    tls: TlsSettings | None = None
    reconnect_initial: float = Field(default=1.0, gt=0)
    """First delay (s) before reconnecting; doubles per failure."""
    reconnect_max: float = Field(default=60.0, gt=0)
    """Cap (s) of the reconnect delay; the actual delay is jittered between half and all of it."""

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

    @model_validator(mode="before")
    @classmethod
    def _accept_url(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"url": data}
        if not isinstance(data, dict) or not data.get("url"):
            return data
        parts = urlsplit(str(data["url"]))
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"url: scheme must be mqtt:// or mqtts://, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("url: no host name")
        secure = parts.scheme in ("mqtts", "ssl")
        try:
            url_port = parts.port
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from exc
        from_url: dict[str, Any] = {
            "host": parts.hostname,
            "port": url_port or (_DEFAULT_TLS_PORT if secure else _DEFAULT_PORT),
        }
        if parts.username:
            from_url["username"] = unquote(parts.username)
        if parts.password:
            from_url["password"] = unquote(parts.password)
        if secure:
            from_url["tls"] = {}
        return {**from_url, **data}

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give either password or password_env, not both")
        if self.password_env is not None and self.password_env not in os.environ:
            raise ValueError(f"password_env: environment variable {self.password_env} is not set")
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError("reconnect_max must not be below reconnect_initial")
        for name in ("discovery_prefix", "base_topic", "gateway_id"):
            value: str = getattr(self, name)
            if not _TOPIC_SEGMENT.match(value) or value.startswith("/") or value.endswith("/"):
                raise ValueError(f"{name}: {value!r} is not a usable topic (no wildcards, spaces or edge '/')")
        return self

    # -- derived ----------------------------------------------------------------------------------

    def resolved_password(self) -> str | None:
        """The password from the config or from the environment variable named by ``password_env``."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None

    @property
    def effective_client_id(self) -> str:
        """The client id used on the wire."""
        return self.client_id or f"bmsgate-{self.gateway_id}"

    @property
    def effective_ha_status_topic(self) -> str:
        """Home Assistant's birth/last-will topic."""
        return self.ha_status_topic or f"{self.discovery_prefix}/status"

    def display_url(self) -> str:
        """Where we connect, for logs (never includes the password)."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

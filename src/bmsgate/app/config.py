"""The configuration file: YAML validated once into typed models.

Errors name the key path (``batteries[1].transport.address``), the bad value and what is expected.
String values may reference environment variables as ``${NAME}`` (for secrets such as passwords);
a missing variable is a configuration error naming the key.
See config.example.yaml for a commented example.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bmsgate.datafiles import describe_validation_error, parse_yaml, read_text
from bmsgate.errors import ConfigError
from bmsgate.homeassistant.settings import MqttSettings
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.rs485.settings import Rs485Settings
from bmsgate.inverter.settings import InverterSettings

__all__ = [
    "BatteryConfig",
    "BleTransportConfig",
    "ClientOptionsConfig",
    "ConsoleConfig",
    "GatewayConfig",
    "LoggingConfig",
    "OutputsConfig",
    "ReplayTransportConfig",
    "SchedulerConfig",
    "SerialTransportConfig",
    "SimulatorTransportConfig",
    "config_from_mapping",
    "load_config",
]

_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ENV_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAC: Final = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- transports --------------------------------------------------------------------------------------


class BleTransportConfig(_Strict):
    """Bluetooth LE: by MAC address (preferred) or advertised name."""

    type: Literal["ble"]
    address: str | None = None
    name: str | None = None
    adapter: str | None = None
    """hci0, hci1, ... (default: the system's default adapter)."""
    pin: str | None = None
    """Pairing passkey where the BMS needs one (use ${ENV_VAR} to keep it out of the file)."""
    connect_timeout: float = Field(default=20.0, gt=0)
    write_mode: Literal["auto", "with_response", "without_response"] | None = None
    """Override the protocol's write mode (default: detect from the characteristic, remember what works)."""

    @field_validator("address")
    @classmethod
    def _mac_form(cls, value: str | None) -> str | None:
        if value is not None and not _MAC.match(value) and not re.fullmatch(r"[0-9A-Fa-f-]{36}", value):
            raise ValueError("expected a MAC address like 'A4:C1:37:12:34:56' (or a macOS device UUID)")
        return value.upper() if value else value

    @model_validator(mode="after")
    def _address_or_name(self) -> Self:
        if not self.address and not self.name:
            raise ValueError("give 'address' (MAC) or 'name' (advertised name)")
        return self


class SerialTransportConfig(_Strict):
    """UART / RS485 adapter; line settings default to the protocol's."""

    type: Literal["serial"]
    port: str
    baudrate: int | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None


class SimulatorFaultsConfig(_Strict):
    """Fault probabilities (0..1) for simulated batteries."""

    drop_reply: float = Field(default=0.0, ge=0, le=1)
    corrupt_checksum: float = Field(default=0.0, ge=0, le=1)
    truncate: float = Field(default=0.0, ge=0, le=1)
    delay: float = Field(default=0.0, ge=0, le=1)
    noise: float = Field(default=0.0, ge=0, le=1)
    disconnect_mid_frame: float = Field(default=0.0, ge=0, le=1)
    refuse_connect: float = Field(default=0.0, ge=0, le=1)


class SimulatorTransportConfig(_Strict):
    """A virtual battery (no hardware): for demos, tests and trying bmsgate out."""

    type: Literal["simulator"]
    cells: int = Field(default=16, ge=1, le=32)
    capacity: float = Field(default=100.0, gt=0)
    ntc_count: int = Field(default=2, ge=0, le=8)
    initial_soc: float = Field(default=60.0, ge=0, le=100)
    current_amplitude: float = Field(default=30.0, ge=0)
    current_period: float = Field(default=3600.0, gt=0)
    drift_cell: int | None = Field(default=None, ge=1)
    drift_rate: float = 2.0
    fault: Literal["none", "overtemperature", "cell_overvoltage", "cell_undervoltage", "short_circuit"] = "none"
    fault_after: float = Field(default=600.0, ge=0)
    time_scale: float = Field(default=1.0, gt=0)
    seed: int = 1
    faults: SimulatorFaultsConfig = SimulatorFaultsConfig()

    @model_validator(mode="after")
    def _drift_cell_exists(self) -> Self:
        if self.drift_cell is not None and self.drift_cell > self.cells:
            raise ValueError(f"drift_cell {self.drift_cell} is larger than the pack's {self.cells} cells")
        return self


class ReplayTransportConfig(_Strict):
    """Plays back a recorded conversation (bmsgate-replay file)."""

    type: Literal["replay"]
    file: Path


TransportConfig = Annotated[
    BleTransportConfig | SerialTransportConfig | SimulatorTransportConfig | ReplayTransportConfig,
    Field(discriminator="type"),
]


# -- batteries ---------------------------------------------------------------------------------------


class ClientOptionsConfig(_Strict):
    """Per-battery polling options (see `bmsgate.runtime.client.ClientOptions`)."""

    request_timeout: float = Field(default=2.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    connection: Literal["keep", "per_poll"] = "keep"
    mosfet_sensor: Literal["none", "ntc1"] = "none"


class BatteryConfig(_Strict):
    """One battery."""

    id: str
    """Stable identifier: lowercase letters, digits, '-' and '_' (used in topics and entity ids)."""
    name: str | None = None
    protocol: str | None = None
    """A built-in protocol name (see `bmsgate protocols list`)."""
    protocol_file: Path | None = None
    """Or a protocol definition YAML file."""
    transport: TransportConfig
    poll_interval: float = Field(default=10.0, ge=0.2, le=3600)
    stale_after: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)
    """Seconds without fresh data before outputs treat the battery as stale (default: 3 polls, ≥ 30 s)."""
    options: ClientOptionsConfig = ClientOptionsConfig()

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _one_protocol(self) -> Self:
        if (self.protocol is None) == (self.protocol_file is None):
            raise ValueError("give exactly one of 'protocol' (built-in name) and 'protocol_file'")
        return self

    @property
    def display_name(self) -> str:
        """The name shown to people."""
        return self.name or self.id

    @property
    def stale_budget(self) -> float:
        """Effective staleness budget in seconds."""
        return self.stale_after if self.stale_after is not None else max(3 * self.poll_interval, 30.0)


# -- outputs and the rest ----------------------------------------------------------------------------


class ConsoleConfig(_Strict):
    """The terminal output."""

    enabled: bool = True
    mode: Literal["auto", "live", "plain"] = "auto"
    """``auto``: a live view on a terminal, periodic plain lines otherwise (journald, pipes)."""
    interval: float = Field(default=10.0, gt=0)
    """Plain mode: seconds between lines per battery."""


class OutputsConfig(_Strict):
    """Outputs; each network output validates its own section (see its documentation)."""

    console: ConsoleConfig = ConsoleConfig()
    mqtt: MqttSettings | None = None
    """Home Assistant over MQTT (docs/home-assistant.md); a ``mqtt://user:pass@host:port`` URL also works."""
    modbus: ModbusSettings | None = None
    """The inverter over Modbus RTU/TCP (docs/modbus.md)."""
    can: CanSettings | None = None
    """The inverter over CAN (docs/can.md)."""
    rs485: Rs485Settings | None = None
    """The inverter over Pylontech LV RS485, battery side (docs/inverters.md)."""


class LoggingConfig(_Strict):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "plain", "journald"] = "auto"
    """``journald`` drops timestamps (journald adds its own) and prefixes syslog priorities."""


class SchedulerConfig(_Strict):
    """Sharing of scarce connections."""

    ble_slots: int = Field(default=3, ge=1, le=10)
    """Concurrent BLE connections per adapter (most adapters manage 3-7)."""


class GatewayConfig(_Strict):
    """The whole configuration file."""

    name: str = "bmsgate"
    state_dir: Path | None = None
    """Where energy counters and the like persist (default: $XDG_STATE_HOME/bmsgate)."""
    batteries: list[BatteryConfig] = Field(min_length=1)
    inverter: InverterSettings = InverterSettings()
    """The bank and its limits, computed once for every inverter output (docs/limits.md)."""
    outputs: OutputsConfig = OutputsConfig()
    logging: LoggingConfig = LoggingConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        for battery in self.batteries:
            if battery.id in seen:
                raise ValueError(f"battery id {battery.id!r} is used twice")
            seen.add(battery.id)
        return self

    @model_validator(mode="after")
    def _can_silence_after_staleness(self) -> Self:
        # The CAN output must send safe frames (zero limits, error flags) before it goes silent, and it
        # only knows the data is bad once the battery is stale: silence must come later than that.
        can = self.outputs.can
        if can is None:
            return self
        safe_after = self.inverter.safe_after
        if safe_after is not None and can.silent_after <= safe_after:
            raise ValueError(
                f"outputs.can.silent_after ({can.silent_after:g} s) must be longer than inverter.safe_after "
                f"({safe_after:g} s), or the inverter would never see the safe frames"
            )
        bank = set(self.inverter.batteries) or {battery.id for battery in self.batteries}
        budgets = [battery.stale_budget for battery in self.batteries if battery.id in bank]
        if budgets and can.silent_after <= max(budgets):
            raise ValueError(
                f"outputs.can.silent_after ({can.silent_after:g} s) must be longer than the bank batteries' "
                f"stale_after ({max(budgets):g} s), or the inverter would never see the safe frames"
            )
        return self

    def effective_state_dir(self) -> Path:
        """The state directory to use."""
        if self.state_dir is not None:
            return self.state_dir
        base = os.environ.get("STATE_DIRECTORY") or os.environ.get("XDG_STATE_HOME")
        return Path(base) / "bmsgate" if base else Path.home() / ".local/state/bmsgate"


# -- loading -----------------------------------------------------------------------------------------

_MOVED_TO_INVERTER: Final = {
    "modbus": ("batteries", "limits", "soc_extreme_band", "refresh_interval"),
    "can": ("batteries", "limits", "soc_extreme_band", "safe_after"),
}
"""Keys the inverter outputs had each of their own until one controller computed the bank for all."""


def _check_moved_keys(data: Mapping[str, Any], source: str) -> None:
    outputs = data.get("outputs")
    if not isinstance(outputs, Mapping):
        return
    for output, keys in _MOVED_TO_INVERTER.items():
        section = outputs.get(output)
        if not isinstance(section, Mapping):
            continue
        for key in keys:
            if key in section:
                raise ConfigError(
                    f"moved to inverter.{key}: one bank and one set of limits now serve every inverter output "
                    "(see config.example.yaml)",
                    key_path=f"outputs.{output}.{key}",
                    source=source,
                )


def _expand_environment(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name not in os.environ:
                raise ConfigError(f"environment variable {name} is not set", key_path=path)
            return os.environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, Mapping):
        return {key: _expand_environment(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_environment(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def config_from_mapping(data: Any, *, source: str = "<config>") -> GatewayConfig:
    """Validate parsed YAML.

    Raises:
        ConfigError: naming the key path, the bad value and what is expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping with at least a 'batteries' list", source=source)
    expanded = _expand_environment(data, "")
    _check_moved_keys(expanded, source)
    try:
        return GatewayConfig.model_validate(expanded)
    except ValidationError as exc:
        # The discriminated transport union adds its tag to locations; the user never wrote it.
        problem = describe_validation_error(exc, skip=("ble", "serial", "simulator", "replay"))
    if problem.kind == "missing":
        detail = "this key is required"
    elif problem.kind == "extra_forbidden":
        detail = "unknown key (check the spelling; see config.example.yaml)"
    elif isinstance(problem.value, str | int | float | bool) or problem.value is None:
        detail = f"{problem.reason} (got {problem.value!r})"
    else:
        detail = problem.reason
    raise ConfigError(detail + problem.more_text, key_path=problem.location, source=source)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a configuration file.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid content.
    """
    source = str(path)
    text = read_text(path, error=lambda reason: ConfigError(reason, source=source))
    data = parse_yaml(text, error=lambda reason: ConfigError(reason, source=source))
    return config_from_mapping(data, source=source)

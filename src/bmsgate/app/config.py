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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bmsgate.datafiles import ValidationProblem, describe_validation_errors, parse_yaml, read_text
from bmsgate.errors import ConfigError, ConfigProblem, DefinitionError
from bmsgate.fleet.agent.settings import FleetSettings
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
    "is_secret_key",
    "default_state_dir",
    "load_config",
    "state_dir_problem",
]

_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ENV_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAC: Final = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/bmsgate``.

    Under the shipped unit (``ProtectSystem=strict``) the state directory systemd creates is the only
    writable place; it is used as it is (systemd named it already). With several directories systemd
    separates them by ``:``; the first is ours.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bmsgate"


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
    # Counts are strict: YAML reads `cells: true` as a bool, which lax validation would take for 1.
    cells: int = Field(default=16, ge=1, le=32, strict=True)
    capacity: float = Field(default=100.0, gt=0)
    ntc_count: int = Field(default=2, ge=0, le=8, strict=True)
    initial_soc: float = Field(default=60.0, ge=0, le=100)
    current_amplitude: float = Field(default=30.0, ge=0)
    current_period: float = Field(default=3600.0, gt=0)
    drift_cell: int | None = Field(default=None, ge=1, strict=True)
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
    retries: int = Field(default=2, ge=0, le=10, strict=True)
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
    secret: SecretStr | None = None
    """A credential the BMS protocol itself asks for once connected (the 123\\SmartBMS PIN, the Stark Varg
    key): not the BLE pairing passkey (``transport.pin``). Use ${ENV_VAR} to keep it out of the file; it is
    never logged or shown."""

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

    @field_validator("stale_after")
    @classmethod
    def _stale_after_a_poll(cls, value: float | None, info: ValidationInfo) -> float | None:
        # Fresh data is at best one poll interval old when the next poll lands: a shorter budget
        # would mark the battery stale between every two polls and send the inverter to its safe state.
        # A field validator (not a model one) so that it reports even when another key is wrong too.
        poll_interval = info.data.get("poll_interval")
        if value is not None and poll_interval is not None and value <= poll_interval:
            raise ValueError(
                f"must be longer than poll_interval ({poll_interval:g} s), "
                "or the battery goes stale between every two polls"
            )
        return value

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
    fleet: FleetSettings | None = None
    """Reporting to a fleet server: telemetry, location, offline buffer, commands (docs/fleet/agent.md)."""


class LoggingConfig(_Strict):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "plain", "journald"] = "auto"
    """``journald`` drops timestamps (journald adds its own) and prefixes syslog priorities."""


class SchedulerConfig(_Strict):
    """Sharing of scarce connections."""

    ble_slots: int = Field(default=3, ge=1, le=10, strict=True)
    """Concurrent BLE connections per adapter (most adapters manage 3-7)."""


class GatewayConfig(_Strict):
    """The whole configuration file."""

    name: str = "bmsgate"
    state_dir: Path = Field(default_factory=default_state_dir)
    """Where energy counters and the like persist (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/bmsgate)."""
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
        """The state directory to use (kept for callers from when `state_dir` could be None)."""
        return self.state_dir


def state_dir_problem(path: Path) -> str | None:
    """Why bmsgate could not keep its state in `path`, or None when it can.

    Nothing is created: `config check` must not leave directories behind. A missing directory is
    fine when its nearest existing parent is writable (it is created on first save).
    """
    if path.exists() and not path.is_dir():
        return f"{path} is not a directory"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create {path}: {existing} is not a directory"
    # access(2) also reports a read-only mount (EROFS), which is what ProtectSystem=strict makes of /var.
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (its parent {existing} is not writable)"
        return (
            f"cannot write to {path}{where}: energy counters would not persist; set state_dir to a writable "
            "directory (under systemd, StateDirectory= provides $STATE_DIRECTORY)"
        )
    return None


# -- loading -----------------------------------------------------------------------------------------

_MOVED_TO_INVERTER: Final = {
    "modbus": ("batteries", "limits", "soc_extreme_band", "refresh_interval"),
    "can": ("batteries", "limits", "soc_extreme_band", "safe_after"),
}
"""Keys the inverter outputs had each of their own until one controller computed the bank for all."""


def _moved_keys(data: Mapping[str, Any], source: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    outputs = data.get("outputs")
    if not isinstance(outputs, Mapping):
        return problems
    for output, keys in _MOVED_TO_INVERTER.items():
        section = outputs.get(output)
        if not isinstance(section, Mapping):
            continue
        problems.extend(
            ConfigProblem(
                f"moved to inverter.{key}: one bank and one set of limits now serve every inverter output "
                "(see config.example.yaml)",
                key_path=f"outputs.{output}.{key}",
                source=source,
            )
            for key in keys
            if key in section
        )
    return problems


def _expand_environment(value: Any, path: str) -> Any:
    # The same bounds as the YAML loader (datafiles.MAX_NODES / MAX_DEPTH): a mapping handed in directly
    # can still share one list many times over, and this walk visits every copy.
    budget = [100_000]

    def expand(item: Any, where: str, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError("too big: more than 100000 values once aliases are expanded", key_path=path)
        if depth > 64:
            raise ConfigError("nested deeper than 64 levels", key_path=where)
        if isinstance(item, str):

            def substitute(match: re.Match[str]) -> str:
                name = match[1]
                if name not in os.environ:
                    raise ConfigError(f"environment variable {name} is not set", key_path=where)
                return os.environ[name]

            return _ENV_REFERENCE.sub(substitute, item)
        if isinstance(item, Mapping):
            return {
                key: expand(child, f"{where}.{key}" if where else str(key), depth + 1) for key, child in item.items()
            }
        if isinstance(item, list):
            return [expand(child, f"{where}[{index}]", depth + 1) for index, child in enumerate(item)]
        return item

    return expand(value, path, 0)


def config_from_mapping(data: Any, *, source: str = "<config>") -> GatewayConfig:
    """Validate parsed YAML.

    Raises:
        ConfigError: naming the key path, the bad value and what is expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping with at least a 'batteries' list", source=source)
    try:
        expanded = _expand_environment(data, "")
    except ConfigError as exc:
        raise exc.with_source(source) from None
    problems = _moved_keys(expanded, source)
    try:
        config = GatewayConfig.model_validate(expanded)
    except ValidationError as exc:
        # The discriminated transport union adds its tag to locations; the user never wrote it.
        found = describe_validation_errors(exc, skip=("ble", "serial", "simulator", "replay"))
        moved = {problem.key_path for problem in problems}
        problems += [
            ConfigProblem(_detail(problem), key_path=problem.location, source=source)
            for problem in found
            if problem.location not in moved
        ]
        # A valid file would report these when the gateway is built; a file that also has schema errors
        # must not hide them behind a second round of fixing.
        reported = {problem.key_path for problem in problems}
        problems += [problem for problem in _unknown_protocols(expanded, source) if problem.key_path not in reported]
    if problems:
        raise ConfigError(problems=problems)
    return config


def _unknown_protocols(data: Mapping[str, Any], source: str) -> list[ConfigProblem]:
    """Protocol names in ``batteries[*].protocol`` that the catalog does not know (paths are left to the build)."""
    from bmsgate.catalog import Kind, default_catalog, is_path  # noqa: PLC0415 - only for a failing file

    batteries = data.get("batteries")
    if not isinstance(batteries, list):
        return []
    problems = []
    for index, battery in enumerate(batteries):
        name = battery.get("protocol") if isinstance(battery, Mapping) else None
        if not isinstance(name, str) or not name or is_path(name):
            continue
        try:
            default_catalog().get(Kind.PROTOCOL, name)
        except DefinitionError as exc:
            problems.append(ConfigProblem(exc.reason, key_path=f"batteries[{index}].protocol", source=source))
    return problems


_SECRET_WORDS: Final = frozenset({"secret", "pin", "password", "passphrase", "key", "token"})
"""A key whose name has one of these words (``key_pem``, ``password_env``) may hold a credential."""


def is_secret_key(location: str) -> bool:
    """Whether the value at `location` (``batteries[0].secret``) may be a credential, whose value is never echoed.

    One rule by name for every section: each `SecretStr` field and each pin, password, secret or key is named so
    (tests/app/test_config_secrets.py walks the models to keep it that way). A wrongly typed credential is still
    the credential (``secret: 1234`` unquoted), so its value stays out of the message like a valid one.
    """
    name = location.rsplit(".", 1)[-1].split("[", 1)[0].lower()
    return not _SECRET_WORDS.isdisjoint(name.split("_"))


def _detail(problem: ValidationProblem) -> str:
    if problem.kind == "missing":
        return "this key is required"
    if problem.kind == "extra_forbidden":
        return "unknown key (check the spelling; see config.example.yaml)"
    if is_secret_key(problem.location):
        if isinstance(problem.value, int | float) and problem.kind == "string_type":
            # YAML reads an unquoted PIN as a number (0123 even as octal 83): what it held is lost already.
            name = problem.location.rsplit(".", 1)[-1]
            return f'expected text, got a number: quote it ({name}: "..."); unquoted, YAML drops leading zeros'
        return problem.reason
    if isinstance(problem.value, str) and "://" in problem.value and "@" in problem.value:
        return problem.reason  # a URL with a user part may carry a password (mqtt://user:pass@host)
    if isinstance(problem.value, str | int | float | bool) or problem.value is None:
        return f"{problem.reason} (got {problem.value!r})"
    return problem.reason


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a configuration file.

    Raises:
        ConfigError: unreadable file, YAML syntax error, or invalid content.
    """
    source = str(path)
    text = read_text(path, error=lambda reason: ConfigError(reason, source=source))
    data = parse_yaml(text, error=lambda reason: ConfigError(reason, source=source))
    return config_from_mapping(data, source=source)

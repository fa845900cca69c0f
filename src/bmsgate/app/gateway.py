"""Turns a validated configuration into running parts: transports, clients, outputs, supervisor.

This is the only place that knows how every piece is built; each piece itself only knows its own job.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Final

from bmsgate.app.config import (
    BatteryConfig,
    BleTransportConfig,
    GatewayConfig,
    LoggingConfig,
    ReplayTransportConfig,
    SerialTransportConfig,
    SimulatorTransportConfig,
    state_dir_problem,
)
from bmsgate.app.console import ConsoleSink
from bmsgate.catalog import default_catalog
from bmsgate.errors import AuthenticationError, CaptureError, ConfigError, ConfigProblem, DefinitionError
from bmsgate.protocols import CompiledProtocol
from bmsgate.protocols.gattauth import configured_key
from bmsgate.protocols.secret import NO_SECRET_USE, secret_form_problem, secret_use
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.simulation import SIMULATED_SECRET, PackConfig
from bmsgate.runtime.slots import ConnectionSlots
from bmsgate.runtime.supervisor import BatteryRuntime, Sink, Supervisor
from bmsgate.transports.base import Transport

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Gateway", "build_gateway", "check_start", "configure_logging", "run_gateway"]

_LOGGER = logging.getLogger(__name__)
_SHUTDOWN_GRACE: Final = 2.0

# Extra output builders: (config, supervisor) -> sinks. Filled by the output packages' wiring below.
SinkBuilder = Callable[[GatewayConfig, Supervisor, dict[str, CompiledProtocol]], list[Sink]]


class Gateway:
    """A built gateway: the supervisor plus what outputs need to know."""

    def __init__(self, config: GatewayConfig, supervisor: Supervisor, protocols: dict[str, CompiledProtocol]) -> None:
        self.config = config
        self.supervisor = supervisor
        self.protocols = protocols

    @property
    def hub(self) -> SnapshotHub:
        """The snapshot hub."""
        return self.supervisor.hub


def _protocol_for(battery: BatteryConfig, key: str) -> CompiledProtocol:
    catalog = default_catalog()
    try:
        if battery.protocol_file is not None:
            # A Path is always a file (the catalog's last layer), whatever its name looks like.
            return catalog.protocol(battery.protocol_file)
        assert battery.protocol is not None  # validated: exactly one of protocol / protocol_file
        return catalog.protocol(battery.protocol)
    except DefinitionError as exc:
        # The catalog names itself ("protocol catalog"); the user needs the config key that asked.
        if battery.protocol_file is not None:
            raise ConfigError(str(exc), key_path=f"{key}.protocol_file") from None
        raise ConfigError(exc.reason, key_path=f"{key}.protocol") from None


def _secret_of(battery: BatteryConfig) -> bytes | None:
    return battery.secret.get_secret_value().encode() if battery.secret is not None else None


def _check_secret(battery: BatteryConfig, protocol: CompiledProtocol, key: str) -> None:
    """A protocol that uses the battery's secret gets a usable one, or the config is refused.

    A ``secret`` request: the form it can be written in (`secret_form_problem`), checked here rather than at the
    first connect. ``gatt.authenticate``: a key of its length. A secret on a protocol that uses none is only
    warned about (the battery still works; the secret is not sent anywhere).
    """
    secret = _secret_of(battery)
    if secret is not None and secret_use(protocol) == NO_SECRET_USE:
        _LOGGER.warning(
            "%s: protocol %s uses no secret: the battery's 'secret' is ignored (%s.secret)",
            battery.id,
            protocol.name,
            key,
        )
    if secret is not None:
        for request in protocol.definition.requests:
            problem = secret_form_problem(request, protocol.definition.framing, secret)
            if problem is not None:
                raise ConfigError(f"protocol {protocol.name}: {problem}", key_path=f"{key}.secret")
    for profile in protocol.gatt_profiles:
        if profile.authenticate is None or not isinstance(battery.transport, BleTransportConfig):
            continue
        try:
            configured_key(profile.authenticate, _secret_of(battery))
        except AuthenticationError as exc:
            raise ConfigError(f"protocol {protocol.name}: {exc}", key_path=f"{key}.secret") from None


def _secret_for(battery: BatteryConfig, protocol: CompiledProtocol) -> bytes | None:
    """The battery's secret as the session sends it; a simulated pack that needs one gets the simulator's."""
    if battery.secret is not None:
        return _secret_of(battery)
    simulated = isinstance(battery.transport, SimulatorTransportConfig)
    return SIMULATED_SECRET if simulated and protocol.needs_secret else None


def _transport_for(battery: BatteryConfig, protocol: CompiledProtocol, key: str) -> Transport:
    spec = battery.transport
    if isinstance(spec, SimulatorTransportConfig):
        from bmsgate.transports.simulator import FaultPlan, SimulatorTransport  # noqa: PLC0415

        pack = PackConfig(
            cells=spec.cells,
            capacity=spec.capacity,
            ntc_count=spec.ntc_count,
            name=battery.display_name,
            serial_number=f"SIM-{battery.id.upper()}",
            initial_soc=spec.initial_soc,
            current_amplitude=spec.current_amplitude,
            current_period=spec.current_period,
            drift_cell=spec.drift_cell,
            drift_rate=spec.drift_rate,
            fault=spec.fault,
            fault_after=spec.fault_after,
            time_scale=spec.time_scale,
            seed=spec.seed,
        )
        faults = FaultPlan(**spec.faults.model_dump())
        return SimulatorTransport(protocol, pack, faults=faults, battery_id=battery.id)
    if isinstance(spec, ReplayTransportConfig):
        from bmsgate.transports.replay import ReplayTransport  # noqa: PLC0415

        try:
            return ReplayTransport(spec.file, battery_id=battery.id, protocol=protocol)
        except CaptureError as exc:
            raise ConfigError(str(exc), key_path=f"{key}.transport.file") from None
    if isinstance(spec, SerialTransportConfig):
        from bmsgate.transports.serial import SerialTransport  # noqa: PLC0415

        return SerialTransport(
            spec.port,
            protocol,
            baudrate=spec.baudrate,
            parity=spec.parity,
            stopbits=spec.stopbits,
            battery_id=battery.id,
        )
    if isinstance(spec, BleTransportConfig):
        from bmsgate.transports.ble import BleTransport  # noqa: PLC0415

        return BleTransport(
            protocol,
            spec.address,
            name=spec.name,
            adapter=spec.adapter,
            pin=spec.pin,
            write_mode=spec.write_mode,
            battery_id=battery.id,
            connect_timeout=spec.connect_timeout,
            secret=_secret_of(battery),
        )
    raise ConfigError(f"unsupported transport {spec!r}", key_path=f"{key}.transport")


def _slot_group(battery: BatteryConfig) -> str | None:
    spec = battery.transport
    if isinstance(spec, BleTransportConfig):
        return f"ble:{spec.adapter or 'default'}"
    return None


def build_gateway(
    config: GatewayConfig,
    *,
    extra_sinks: list[Sink] | None = None,
    sink_builders: list[SinkBuilder] | None = None,
    console: Console | None = None,
    stream: IO[str] | None = None,
    hub: SnapshotHub | None = None,
) -> Gateway:
    """Build every part from the configuration (nothing runs yet).

    The console output shows its live view on `console` (a rich console, created when the view starts
    if not given) and writes its plain lines to `stream` (default: the console's file, else stdout).

    Raises:
        ConfigError: every battery whose protocol or transport cannot be built, all at once.
    """
    hub = hub or SnapshotHub()
    groups = collections.Counter(group for group in map(_slot_group, config.batteries) if group)
    slots = {
        group: ConnectionSlots(config.scheduler.ble_slots, name=group)
        for group, count in groups.items()
        if count > config.scheduler.ble_slots
    }
    runtimes: list[BatteryRuntime] = []
    protocols: dict[str, CompiledProtocol] = {}
    problems: list[ConfigProblem] = []
    for index, battery in enumerate(config.batteries):
        key = f"batteries[{index}]"
        try:
            protocol = _protocol_for(battery, key)
            _check_secret(battery, protocol, key)
            transport = _transport_for(battery, protocol, key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if (
            protocol.needs_secret
            and battery.secret is None
            and not isinstance(battery.transport, SimulatorTransportConfig)
        ):
            problems.append(
                ConfigProblem(
                    f"protocol {protocol.name!r} logs in with a secret (the BMS's PIN or key): set 'secret' "
                    "(${ENV_VAR} keeps it out of the file)",
                    key_path=f"{key}.secret",
                )
            )
            continue
        protocols[battery.id] = protocol
        group = _slot_group(battery)
        shared = slots.get(group) if group else None
        # Time-slicing only works if nobody holds a slot forever: share by connecting per poll.
        connection = "per_poll" if shared is not None else battery.options.connection
        options = ClientOptions(
            request_timeout=battery.options.request_timeout,
            retries=battery.options.retries,
            connection=connection,
            mosfet_sensor=battery.options.mosfet_sensor,
            poll_deadline=max(15.0, battery.options.request_timeout * 6),
            secret=_secret_for(battery, protocol),
        )
        client = BatteryClient(protocol, transport, battery_id=battery.id, options=options)
        runtimes.append(
            BatteryRuntime(
                battery_id=battery.id,
                name=battery.display_name,
                client=client,
                poll_interval=battery.poll_interval,
                stale_after=battery.stale_budget,
                slots=shared,
            )
        )
    if problems:
        raise ConfigError(problems=problems)
    for group, shared in slots.items():
        _LOGGER.info(
            "%s: %d batteries share %d connection slots (connect-read-disconnect in turn)",
            group,
            groups[group],
            shared.limit,
        )
    supervisor = Supervisor(runtimes, [], hub=hub)
    sinks: list[Sink] = []
    if config.outputs.console.enabled:
        sinks.append(
            ConsoleSink(
                console=console,
                stream=stream,
                mode=config.outputs.console.mode,
                interval=config.outputs.console.interval,
                names={battery.id: battery.display_name for battery in config.batteries},
                link_stats=supervisor.link_stats,
            )
        )
    for builder in sink_builders or []:
        sinks.extend(builder(config, supervisor, protocols))
    sinks.extend(extra_sinks or [])
    supervisor.sinks = sinks
    return Gateway(config, supervisor, protocols)


def check_start(config: GatewayConfig, *, ports: bool) -> None:
    """What `run` needs of the machine before anything starts: a writable state directory and free ports.

    `ports` is off for ``config check``: a gateway already running from this file holds them.

    Raises:
        ConfigError: every problem, each naming the key that sets the directory or port.
    """
    from bmsgate.app.ports import check_tcp_port_free  # noqa: PLC0415

    problems: list[ConfigProblem] = []
    directories = {"state_dir": config.state_dir}
    mqtt = config.outputs.mqtt
    if mqtt is not None and "state_dir" in mqtt.model_fields_set:
        directories["outputs.mqtt.state_dir"] = mqtt.state_dir
    for key, directory in directories.items():
        reason = state_dir_problem(directory)
        if reason is not None:
            problems.append(ConfigProblem(reason, key_path=key))
    modbus = config.outputs.modbus
    if ports and modbus is not None and modbus.mode == "tcp":
        try:
            check_tcp_port_free(modbus.host, modbus.port, key_path="outputs.modbus.port")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems=problems)


async def run_gateway(gateway: Gateway, *, duration: float | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `duration`); shuts down within about two seconds."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, gateway.supervisor.request_stop)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread / Windows
            pass
    try:
        await gateway.supervisor.run(duration=duration)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


class _JournaldFormatter(logging.Formatter):
    """``<priority>logger: message``; journald adds time and host itself."""

    _PRIORITIES: Final = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


def configure_logging(settings: LoggingConfig, *, debug: bool = False, stream: Any = None) -> None:
    """Set up the root logger for `run`/`demo` (journald-friendly when under systemd)."""
    stream = stream or sys.stderr
    under_journald = bool(os.environ.get("JOURNAL_STREAM")) and not getattr(stream, "isatty", lambda: False)()
    use_journald = settings.format == "journald" or (settings.format == "auto" and under_journald)
    handler = logging.StreamHandler(stream)
    if use_journald:
        handler.setFormatter(_JournaldFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, settings.level))

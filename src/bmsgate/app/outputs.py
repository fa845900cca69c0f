"""Wiring of the network outputs (Home Assistant over MQTT, Modbus, CAN) into a gateway.

Each output package is imported only when the configuration (or the demo) asks for it, so a minimal
installation never needs their libraries. When both an inverter output and MQTT run, the inverter's
limits, bank state and limitation reason also appear in Home Assistant.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import ValidationError

from bmsgate.app.config import GatewayConfig
from bmsgate.app.gateway import SinkBuilder
from bmsgate.app.ports import check_tcp_port_free, tcp_port_free
from bmsgate.catalog import default_catalog
from bmsgate.errors import ConfigError
from bmsgate.protocols import CompiledProtocol
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.supervisor import Sink, Supervisor

if TYPE_CHECKING:
    from bmsgate.app.demo import DemoOptions
    from bmsgate.inverter.can.settings import CanSettings
    from bmsgate.inverter.modbus.settings import ModbusSettings

__all__ = ["configured_sink_builders", "demo_output_builders"]

_LOGGER = logging.getLogger(__name__)


class _InverterStatusRelay:
    """Lets the MQTT output read whatever inverter output runs (without knowing which)."""

    def __init__(self) -> None:
        self.sources: list[Any] = []

    def __call__(self) -> Mapping[str, object] | None:
        for source in self.sources:
            status = getattr(source, "status", None)
            if status is not None:
                data: Mapping[str, object] = status.to_dict()
                return data
        return None


_BankSettings = TypeVar("_BankSettings", "ModbusSettings", "CanSettings")


def _with_bank(settings: _BankSettings, config: GatewayConfig, output: str) -> _BankSettings:
    """The output's settings with its bank spelled out (default: every battery), checked against the config."""
    known = [battery.id for battery in config.batteries]
    if not settings.batteries:
        return settings.model_copy(update={"batteries": tuple(known)})
    unknown = set(settings.batteries) - set(known)
    if unknown:
        raise ConfigError(f"unknown battery ids {sorted(unknown)}", key_path=f"outputs.{output}.batteries")
    return settings


def _modbus_sinks(settings: ModbusSettings, config: GatewayConfig, relay: _InverterStatusRelay) -> list[Sink]:
    from bmsgate.inverter.modbus.sink import ModbusSink  # noqa: PLC0415 - needs the [modbus] extra

    sink = ModbusSink(
        _with_bank(settings, config, "modbus"), register_map=default_catalog().register_map(settings.register_map)
    )
    relay.sources.append(sink)
    return [sink]


def _can_sinks(settings: CanSettings, config: GatewayConfig, relay: _InverterStatusRelay) -> list[Sink]:
    from bmsgate.inverter.can.sink import CanSink  # noqa: PLC0415 - needs the [can] extra

    sink = CanSink(_with_bank(settings, config, "can"), profile=default_catalog().can_profile(settings.profile))
    relay.sources.append(sink)
    return [sink]


def _mqtt_sinks(
    settings: Any,
    config: GatewayConfig,
    supervisor: Supervisor,
    protocols: dict[str, CompiledProtocol],
    relay: _InverterStatusRelay,
) -> list[Sink]:
    return [_mqtt_sink(settings, config, supervisor, protocols, relay)]


def _mqtt_sink(
    settings: Any,
    config: GatewayConfig,
    supervisor: Supervisor,
    protocols: dict[str, CompiledProtocol],
    relay: _InverterStatusRelay,
) -> Sink:
    from bmsgate import __version__  # noqa: PLC0415
    from bmsgate.homeassistant.settings import BatteryInfo, LinkStats  # noqa: PLC0415
    from bmsgate.homeassistant.sink import HomeAssistantSink  # noqa: PLC0415 - needs the [mqtt] extra

    batteries = []
    for battery in config.batteries:
        address = getattr(battery.transport, "address", None)
        batteries.append(
            BatteryInfo(
                battery_id=battery.id,
                name=battery.display_name,
                address=address,
                protocol=protocols[battery.id].name,
                alarms=protocols[battery.id].possible_alarms,
            )
        )

    def link_stats(battery_id: str) -> LinkStats | None:
        stats = supervisor.link_stats(battery_id)
        if stats is None:
            return None
        return LinkStats(success_rate=stats.success_rate, rssi=stats.rssi, last_error=stats.last_error)

    if "state_dir" not in settings.model_fields_set and config.state_dir is not None:
        settings = settings.model_copy(update={"state_dir": config.state_dir})
    return HomeAssistantSink(
        settings,
        batteries,
        control=supervisor if settings.allow_control else None,
        link_stats=link_stats,
        inverter_status=relay,
        sw_version=__version__,
    )


class _EmbeddedBrokerSink:
    """The demo's MQTT output: starts a broker on localhost, then publishes to it (one lifetime)."""

    name = "mqtt"

    def __init__(self, host: str, port: int, build: Callable[[str, Path], Sink]) -> None:
        self._host, self._port = host, port
        self._build = build

    async def run(self, hub: SnapshotHub) -> None:
        from bmsgate.homeassistant.broker import EmbeddedBroker  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="bmsgate-demo-") as state_dir:
            async with EmbeddedBroker(host=self._host, port=self._port) as broker:
                _LOGGER.info(
                    "demo: MQTT broker at %s — point Home Assistant's MQTT integration at this machine, port %d",
                    broker.url,
                    self._port,
                )
                await self._build(broker.url, Path(state_dir)).run(hub)


def configured_sink_builders() -> list[SinkBuilder]:
    """Builders that create the outputs a configuration file enables."""

    def build(config: GatewayConfig, supervisor: Supervisor, protocols: dict[str, CompiledProtocol]) -> list[Sink]:
        relay = _InverterStatusRelay()
        sinks: list[Sink] = []
        if config.outputs.modbus is not None:
            sinks += _modbus_sinks(config.outputs.modbus, config, relay)
        if config.outputs.can is not None:
            sinks += _can_sinks(config.outputs.can, config, relay)
        if config.outputs.mqtt is not None:
            sinks += _mqtt_sinks(config.outputs.mqtt, config, supervisor, protocols, relay)
        return sinks

    return [build]


def demo_output_builders(options: DemoOptions) -> list[SinkBuilder]:
    """Builders for the demo's outputs on localhost."""
    from bmsgate.app.demo import BANK  # noqa: PLC0415 - demo.py imports this module lazily too

    def build(config: GatewayConfig, supervisor: Supervisor, protocols: dict[str, CompiledProtocol]) -> list[Sink]:
        relay = _InverterStatusRelay()
        sinks: list[Sink] = []
        if options.mqtt is not None:
            sinks.append(_demo_mqtt(options, config, supervisor, protocols, relay))
        if options.modbus_tcp is not None:
            from bmsgate.inverter.modbus.settings import ModbusSettings  # noqa: PLC0415

            host, port = _host_port(options.modbus_tcp, "--modbus-tcp")
            check_tcp_port_free(host, port, key_path="--modbus-tcp")
            settings = ModbusSettings(mode="tcp", host=host, port=port, register_map=options.modbus_map, batteries=BANK)
            sinks += _modbus_sinks(settings, config, relay)
            _LOGGER.info("demo: Modbus TCP server on %s:%d (map %s)", host, port, options.modbus_map)
        # CAN always runs in the demo, on python-can's virtual bus (no hardware); --can-log records it.
        from bmsgate.inverter.can.settings import CanSettings  # noqa: PLC0415

        can_settings = CanSettings(
            interface="virtual",
            channel="bmsgate-demo",
            profile=options.can_profile,
            log_file=Path(options.can_log) if options.can_log else None,
            batteries=BANK,
        )
        sinks += _can_sinks(can_settings, config, relay)
        # A simulated inverter on the same virtual bus sends the keep-alives (or Growatt's requests).
        from bmsgate.inverter.can.simulated import SimulatedInverter  # noqa: PLC0415 - needs the [can] extra

        sinks.append(SimulatedInverter(can_settings))
        _LOGGER.info(
            "demo: CAN profile %s on a virtual bus with a simulated inverter%s",
            options.can_profile,
            f", frames logged to {options.can_log}" if options.can_log else "",
        )
        return sinks

    return [build]


def _demo_mqtt(
    options: DemoOptions,
    config: GatewayConfig,
    supervisor: Supervisor,
    protocols: dict[str, CompiledProtocol],
    relay: _InverterStatusRelay,
) -> Sink:
    from bmsgate.homeassistant.settings import MqttSettings  # noqa: PLC0415

    def build(url: str, state_dir: Path) -> Sink:
        try:
            settings = MqttSettings.model_validate({"url": url, "state_dir": state_dir, "allow_control": True})
        except ValidationError as exc:
            raise ConfigError(exc.errors()[0]["msg"], key_path="--mqtt") from None
        return _mqtt_sink(settings, config, supervisor, protocols, relay)

    if options.mqtt:
        with contextlib.suppress(OSError):
            _DEMO_STATE.mkdir(parents=True, exist_ok=True)
        return build(options.mqtt, _DEMO_STATE)
    if options.mqtt_bind is not None:
        # Home Assistant is configured for this exact address: taken means a start-up error.
        host, port = _host_port(options.mqtt_bind, "--mqtt-bind")
        check_tcp_port_free(host, port, key_path="--mqtt-bind")
    else:
        host, port = _DEFAULT_BROKER
        if not tcp_port_free(host, port):
            from bmsgate.homeassistant.broker import free_port  # noqa: PLC0415

            port = free_port(host)
            _LOGGER.info(
                "demo: port %d is taken (another broker?); the embedded broker uses %d", _DEFAULT_BROKER[1], port
            )
    return _EmbeddedBrokerSink(host, port, build)


_DEMO_STATE: Final = Path(tempfile.gettempdir()) / "bmsgate-demo-state"
_DEFAULT_BROKER: Final = ("127.0.0.1", 1883)


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {text!r}", key_path=option)
    return host, int(port)

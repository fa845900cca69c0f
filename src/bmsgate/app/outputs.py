"""Wiring of the network outputs (Home Assistant over MQTT, Modbus, CAN, RS485) from one table.

Each row of :data:`OUTPUTS` names a section of ``outputs:`` and a builder that imports its optional
library only when that section is used, so a minimal installation never needs them; adding an output
is one row. The inverter outputs encode the status of one :class:`InverterController`, created once
when any of them is configured; Home Assistant then shows that same status (limits, bank state and
limitation reason). The configuration file and the demo both build through :func:`build_outputs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from bmsgate.app.config import GatewayConfig
from bmsgate.app.gateway import SinkBuilder
from bmsgate.catalog import default_catalog
from bmsgate.errors import ConfigError
from bmsgate.protocols import CompiledProtocol
from bmsgate.runtime.supervisor import Sink, Supervisor

if TYPE_CHECKING:
    from bmsgate.inverter.controller import InverterController

__all__ = [
    "OUTPUTS",
    "OutputContext",
    "OutputRow",
    "Wiring",
    "build_output",
    "build_outputs",
    "configured_sink_builders",
]


@dataclasses.dataclass(frozen=True, slots=True)
class OutputContext:
    """What an output builder may use besides its own settings."""

    config: GatewayConfig
    supervisor: Supervisor
    protocols: Mapping[str, CompiledProtocol]
    controller: InverterController | None
    """The inverter controller, when any inverter output is configured."""


OutputBuilder = Callable[[Any, OutputContext], list[Sink]]


@dataclasses.dataclass(frozen=True, slots=True)
class OutputRow:
    """One output: its ``outputs:`` section, its builder, and whether it encodes the inverter status."""

    section: str
    build: OutputBuilder
    inverter: bool = False


def _controller_of(context: OutputContext, section: str) -> InverterController:
    if context.controller is None:  # pragma: no cover - build_outputs creates it for every inverter row
        raise RuntimeError(f"outputs.{section} needs the inverter controller")
    return context.controller


def _modbus_sinks(settings: Any, context: OutputContext) -> list[Sink]:
    from bmsgate.inverter.modbus.sink import ModbusSink  # noqa: PLC0415 - RTU / client mode need [modbus]

    register_map = default_catalog().register_map(settings.register_map)
    return [ModbusSink(settings, _controller_of(context, "modbus"), register_map=register_map)]


def _can_sinks(settings: Any, context: OutputContext) -> list[Sink]:
    from bmsgate.inverter.can.sink import CanSink  # noqa: PLC0415 - needs the [can] extra

    profile = default_catalog().can_profile(settings.profile)
    return [CanSink(settings, _controller_of(context, "can"), profile=profile)]


def _rs485_sinks(settings: Any, context: OutputContext) -> list[Sink]:
    from bmsgate.inverter.rs485.sink import Rs485Sink  # noqa: PLC0415 - its port needs the [serial] extra

    return [Rs485Sink(settings, _controller_of(context, "rs485"))]


def _mqtt_sinks(settings: Any, context: OutputContext) -> list[Sink]:
    from bmsgate import __version__  # noqa: PLC0415
    from bmsgate.homeassistant.settings import BatteryInfo, LinkStats  # noqa: PLC0415
    from bmsgate.homeassistant.sink import HomeAssistantSink  # noqa: PLC0415 - needs the [mqtt] extra

    config, supervisor, protocols = context.config, context.supervisor, context.protocols
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

    inverter_status: Callable[[], Mapping[str, object]] | None = None
    controller = context.controller
    if controller is not None:
        # The controller's channel holds the one status every inverter output encodes.
        channel = controller.channel

        def inverter_status() -> Mapping[str, object]:
            return channel.latest.to_dict()

    if "state_dir" not in settings.model_fields_set:
        settings = settings.model_copy(update={"state_dir": config.state_dir})
    return [
        HomeAssistantSink(
            settings,
            batteries,
            control=supervisor if settings.allow_control else None,
            link_stats=link_stats,
            inverter_status=inverter_status,
            sw_version=__version__,
        )
    ]


def _fleet_sinks(settings: Any, context: OutputContext) -> list[Sink]:
    from bmsgate.fleet.agent.wiring import agent_from_settings  # noqa: PLC0415 - needs the [mqtt] extra

    controller = context.controller
    return [
        agent_from_settings(
            settings,
            context.config,
            context.protocols,
            status_channel=controller.channel if controller is not None else None,
            outputs=lambda: context.supervisor.sinks,
            supervisor=context.supervisor,
            inverter_bank=controller.settings.batteries if controller is not None else (),
        )
    ]


OUTPUTS: Final[tuple[OutputRow, ...]] = (
    OutputRow("modbus", _modbus_sinks, inverter=True),
    OutputRow("can", _can_sinks, inverter=True),
    OutputRow("rs485", _rs485_sinks, inverter=True),
    OutputRow("mqtt", _mqtt_sinks),
    OutputRow("fleet", _fleet_sinks),
)
"""Every network output, by its section under ``outputs:``."""

_ROWS: Final = {row.section: row for row in OUTPUTS}


@dataclasses.dataclass(frozen=True, slots=True)
class Wiring:
    """The outputs built from a set of sections, and the context to build more later (the demo's broker)."""

    sinks: list[Sink]
    context: OutputContext


def _new_controller(config: GatewayConfig) -> InverterController:
    from bmsgate.inverter.controller import InverterController  # noqa: PLC0415

    settings = config.inverter
    known = [battery.id for battery in config.batteries]
    unknown = set(settings.batteries) - set(known)
    if unknown:
        raise ConfigError(f"unknown battery ids {sorted(unknown)}", key_path="inverter.batteries")
    if not settings.batteries:
        settings = settings.model_copy(update={"batteries": tuple(known)})
    # The gateway's hub runs on time.monotonic, the controller's default clock.
    return InverterController(settings)


def build_outputs(
    sections: Mapping[str, object | None],
    config: GatewayConfig,
    supervisor: Supervisor,
    protocols: Mapping[str, CompiledProtocol],
) -> Wiring:
    """Build the outputs whose settings are given (None: not configured), plus the controller they share.

    Raises:
        ConfigError: a section the table does not know, or a bank naming unknown batteries.
    """
    unknown = sorted(set(sections) - set(_ROWS))
    if unknown:
        raise ConfigError(f"unknown outputs {unknown}", key_path="outputs")
    wanted = [row for row in OUTPUTS if sections.get(row.section) is not None]
    controller = _new_controller(config) if any(row.inverter for row in wanted) else None
    context = OutputContext(config=config, supervisor=supervisor, protocols=protocols, controller=controller)
    sinks: list[Sink] = [controller] if controller is not None else []
    for row in wanted:
        sinks += row.build(sections[row.section], context)
    return Wiring(sinks, context)


def build_output(section: str, settings: object, context: OutputContext) -> list[Sink]:
    """Build one more output of `section` in an existing wiring (it shares the wiring's controller)."""
    row = _ROWS.get(section)
    if row is None:
        raise ConfigError(f"unknown output {section!r}", key_path="outputs")
    return row.build(settings, context)


def configured_sink_builders() -> list[SinkBuilder]:
    """Builders that create the outputs a configuration file enables."""

    def build(config: GatewayConfig, supervisor: Supervisor, protocols: dict[str, CompiledProtocol]) -> list[Sink]:
        sections = {row.section: getattr(config.outputs, row.section, None) for row in OUTPUTS}
        return build_outputs(sections, config, supervisor, protocols).sinks

    return [build]

"""The embedded default: simulated batteries with every output on localhost.

Nothing to configure and no hardware or network needed. The packs differ on purpose: different
protocols (where built in), cell counts and capacities; one has a cell that drifts away from the
others (watch the balancer and the cell delta), one develops an over-temperature fault (watch the
alarm, the MOSFET opening and the inverter limits dropping).

The two 48 V packs (house and garage) form the inverter bank fed over Modbus and CAN: a bank is packs
in parallel, so only packs of the same voltage belong in it. The 12 V and 24S packs are Home
Assistant-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from bmsgate.app.config import GatewayConfig
from bmsgate.app.console import ConsoleSink
from bmsgate.app.gateway import SinkBuilder
from bmsgate.app.outputs import OutputContext, build_output, build_outputs
from bmsgate.app.ports import check_tcp_port_free, free_tcp_port, tcp_port_free
from bmsgate.catalog import Kind, default_catalog
from bmsgate.datafiles import describe_validation_errors
from bmsgate.errors import ConfigError, ConfigProblem
from bmsgate.fleet.sites import SOUTH_AFRICAN_TOWNS
from bmsgate.homeassistant.settings import MqttSettings
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.rs485.pylontech import DIALECTS
from bmsgate.inverter.rs485.settings import Rs485Settings
from bmsgate.protocols import CompiledProtocol
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.supervisor import Sink, Supervisor

__all__ = ["BANK", "DemoOptions", "demo_config", "demo_sink_builders"]

_LOGGER = logging.getLogger(__name__)

BANK: Final = ("house", "garage")
"""The demo batteries that form the inverter bank."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """Which outputs the demo runs and where."""

    mqtt: str | None = ""
    """Broker URL; empty: start an embedded broker on localhost; None: no MQTT."""
    mqtt_bind: str | None = None
    """Where the embedded broker listens; None: 127.0.0.1:1883, or any free port if that is taken.

    An address given explicitly must be free (Home Assistant is configured for it): else a start-up error.
    """
    modbus_tcp: str | None = ""
    """HOST:PORT of the Modbus TCP server; empty: 127.0.0.1:5020, or any free port if that is taken; None: no Modbus.

    As with `mqtt_bind`, an address given explicitly must be free (an inverter or mbpoll is pointed at it).
    """
    modbus_map: str = "generic"
    can_log: str | None = None
    can_profile: str = "pylon"
    rs485: str | None = None
    """An RS485 dialect: answer a simulated inverter of that family over an in-process pty pair; None: no RS485."""
    fleet_sites: int | None = 30
    """Start a local fleet server with this many simulated sites and connect this gateway to it; None: no fleet."""
    fleet_http: str | None = None
    """HOST:PORT of the fleet dashboard; None: 127.0.0.1:8080, or a free port if that is taken."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The demo's output options."""
        mqtt = parser.add_mutually_exclusive_group()
        mqtt.add_argument(
            "--mqtt",
            metavar="URL",
            default="",
            help="publish to this broker (mqtt://user:pass@host:port); default: an embedded broker on localhost",
        )
        mqtt.add_argument("--no-mqtt", action="store_true", help="do not publish over MQTT")
        parser.add_argument(
            "--mqtt-bind",
            metavar="HOST:PORT",
            default=None,
            help="where the embedded broker listens (default 127.0.0.1:1883, another free port if that is taken; "
            "0.0.0.0:1883 lets Home Assistant on another machine in)",
        )
        modbus = parser.add_mutually_exclusive_group()
        modbus.add_argument(
            "--modbus-tcp",
            metavar="HOST:PORT",
            default="",
            help="Modbus TCP server address (default 127.0.0.1:5020, another free port if that is taken)",
        )
        modbus.add_argument("--no-modbus", action="store_true", help="no Modbus server")
        parser.add_argument("--modbus-map", metavar="NAME|FILE", default="generic", help="register map")
        parser.add_argument("--can-log", metavar="FILE", help="write every CAN frame sent (candump log format)")
        parser.add_argument("--can-profile", metavar="NAME", default="pylon", help="inverter CAN profile")
        parser.add_argument(
            "--rs485",
            metavar="DIALECT",
            choices=sorted(DIALECTS),
            help="also answer a simulated inverter of this family (voltronic, srne, ...) over Pylontech RS485 "
            "on an in-process pty pair",
        )

        fleet = parser.add_mutually_exclusive_group()
        fleet.add_argument(
            "--fleet-sites",
            metavar="N",
            type=int,
            default=30,
            help="simulated sites of the local fleet server (default 30; this gateway is one more)",
        )
        fleet.add_argument("--no-fleet", action="store_true", help="no fleet server and dashboard")
        parser.add_argument(
            "--fleet-http",
            metavar="HOST:PORT",
            default=None,
            help="where the fleet dashboard listens (default 127.0.0.1:8080, another free port if that is taken)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoOptions:
        """From parsed arguments."""
        return cls(
            mqtt=None if args.no_mqtt else args.mqtt,
            mqtt_bind=args.mqtt_bind,
            modbus_tcp=None if args.no_modbus else args.modbus_tcp,
            modbus_map=args.modbus_map,
            can_log=args.can_log,
            can_profile=args.can_profile,
            rs485=args.rs485,
            fleet_sites=None if args.no_fleet else max(args.fleet_sites, 0),
            fleet_http=args.fleet_http,
        )


def _pick(preferred: str) -> str:
    return preferred if preferred in default_catalog().names(Kind.PROTOCOL) else "jbd"


def demo_config(
    *, time_scale: float = 30.0, poll_interval: float = 2.0, plain: bool = False, options: DemoOptions | None = None
) -> dict[str, Any]:
    """The demo's configuration as the mapping a config file would hold."""
    del options  # outputs are added by demo_sink_builders; the mapping holds the batteries and the bank
    common = {"type": "simulator", "time_scale": time_scale}
    batteries: list[dict[str, Any]] = [
        {
            "id": "house",
            "name": "House bank",
            "protocol": "jbd",
            "transport": {
                **common,
                "cells": 16,
                "capacity": 280,
                "ntc_count": 3,
                "initial_soc": 72,
                "current_amplitude": 60,
                "drift_cell": 7,
                "drift_rate": 25.0,
                "seed": 11,
            },
        },
        {
            "id": "garage",
            "name": "Garage rack",
            "protocol": _pick("jk"),
            "transport": {
                **common,
                "cells": 16,
                "capacity": 200,
                "ntc_count": 2,
                "initial_soc": 65,
                "current_amplitude": 40,
                "fault": "overtemperature",
                "fault_after": 40 * time_scale,
                "seed": 22,
            },
        },
        {
            "id": "shed",
            "name": "Shed battery",
            "protocol": _pick("daly"),
            "transport": {
                **common,
                "cells": 4,
                "capacity": 100,
                "ntc_count": 1,
                "initial_soc": 88,
                "current_amplitude": 15,
                "seed": 33,
            },
        },
        {
            "id": "camper",
            "name": "Camper",
            "protocol": "jbd",
            "transport": {**common, "cells": 24, "capacity": 50, "ntc_count": 2, "initial_soc": 30, "seed": 44},
        },
    ]
    for battery in batteries:
        battery["poll_interval"] = poll_interval
        battery["stale_after"] = max(10.0, 5 * poll_interval)
    return {
        "name": "bmsgate-demo",
        "batteries": batteries,
        "inverter": {"batteries": list(BANK)},
        "outputs": {"console": {"mode": "plain" if plain else "auto", "interval": max(5.0, poll_interval)}},
    }


def demo_sink_builders(options: DemoOptions) -> list[SinkBuilder]:
    """Builders for the demo's network outputs (each starts only what its option asks for).

    The options become the settings a configuration file would hold, built through the same output
    table as ``bmsgate run``.
    """

    def build(config: GatewayConfig, supervisor: Supervisor, protocols: dict[str, CompiledProtocol]) -> list[Sink]:
        can_settings = _demo_can(options)
        sections: dict[str, object | None] = {"modbus": _demo_modbus(options), "can": can_settings}
        rs485 = _demo_rs485(options)
        if rs485 is not None:
            sections["rs485"] = rs485.settings
        if options.mqtt:
            with contextlib.suppress(OSError):
                _DEMO_STATE.mkdir(parents=True, exist_ok=True)
            sections["mqtt"] = _mqtt_settings(options.mqtt, _DEMO_STATE)
        wiring = build_outputs(sections, config, supervisor, protocols)
        sinks = wiring.sinks
        if options.mqtt is not None and not options.mqtt:
            sinks.append(_embedded_broker(options, wiring.context))
        # A simulated inverter on the same virtual bus sends the keep-alives (or Growatt's requests).
        from bmsgate.inverter.can.simulated import SimulatedInverter  # noqa: PLC0415 - needs the [can] extra

        sinks.append(SimulatedInverter(can_settings))
        if rs485 is not None:
            sinks.append(rs485.inverter)
        if options.fleet_sites is not None:
            sinks.append(_FleetDemoSink(options, wiring.context))
        _LOGGER.info(
            "demo: CAN profile %s on a virtual bus with a simulated inverter%s",
            options.can_profile,
            f", frames logged to {options.can_log}" if options.can_log else "",
        )
        return sinks

    return [build]


def _demo_modbus(options: DemoOptions) -> ModbusSettings | None:
    if options.modbus_tcp is None:
        return None
    if options.modbus_tcp:
        host, port = _host_port(options.modbus_tcp, "--modbus-tcp")
        check_tcp_port_free(host, port, key_path="--modbus-tcp")
    else:
        host, port = _DEFAULT_MODBUS
        if not tcp_port_free(host, port):
            port = free_tcp_port(host)
            _LOGGER.info("demo: port %d is taken; the Modbus TCP server uses %d", _DEFAULT_MODBUS[1], port)
    _LOGGER.info("demo: Modbus TCP server on %s:%d (map %s)", host, port, options.modbus_map)
    return ModbusSettings(mode="tcp", host=host, port=port, register_map=options.modbus_map)


def _demo_can(options: DemoOptions) -> CanSettings:
    # CAN always runs in the demo, on python-can's virtual bus (no hardware); --can-log records it.
    return CanSettings(
        interface="virtual",
        channel="bmsgate-demo",
        profile=options.can_profile,
        log_file=Path(options.can_log) if options.can_log else None,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _DemoRs485:
    settings: Rs485Settings
    inverter: Sink


def _demo_rs485(options: DemoOptions) -> _DemoRs485 | None:
    # The output opens a real tty (the pair's slave side) through the serial transport, as it would an
    # RS485 adapter; the simulated inverter polls from the master side.
    if options.rs485 is None:
        return None
    from bmsgate.inverter.rs485.simulated import SimulatedRs485Inverter  # noqa: PLC0415
    from bmsgate.transports.pty import PtyPair  # noqa: PLC0415

    pair = PtyPair()
    settings = Rs485Settings(port=pair.port, dialect=options.rs485)
    inverter = SimulatedRs485Inverter(pair.transport, settings.resolved_dialect(), on_stop=pair.close)
    _LOGGER.info("demo: RS485 (%s dialect) on %s with a simulated inverter", options.rs485, pair.port)
    return _DemoRs485(settings, inverter)


def _mqtt_settings(url: str, state_dir: Path) -> MqttSettings:
    try:
        return MqttSettings.model_validate({"url": url, "state_dir": state_dir, "allow_control": True})
    except ValidationError as exc:
        problems = describe_validation_errors(exc)
        raise ConfigError(problems=[ConfigProblem(problem.reason, key_path="--mqtt") for problem in problems]) from None


class _EmbeddedBrokerSink:
    """The demo's MQTT output: starts a broker on localhost, then publishes to it (one lifetime)."""

    name = "mqtt"

    def __init__(self, host: str, port: int, build: Callable[[str, Path], Sink]) -> None:
        self._host, self._port = host, port
        self._build = build

    async def run(self, hub: SnapshotHub) -> None:
        from bmsgate.mqtt.broker import EmbeddedBroker  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="bmsgate-demo-") as state_dir:
            async with EmbeddedBroker(host=self._host, port=self._port) as broker:
                _LOGGER.info(
                    "demo: MQTT broker at %s — point Home Assistant's MQTT integration at this machine, port %d",
                    broker.url,
                    self._port,
                )
                await self._build(broker.url, Path(state_dir)).run(hub)


def _embedded_broker(options: DemoOptions, context: OutputContext) -> Sink:
    def build(url: str, state_dir: Path) -> Sink:
        # The broker's URL is known only once it runs: the MQTT row is built then, in the same wiring.
        (sink,) = build_output("mqtt", _mqtt_settings(url, state_dir), context)
        return sink

    if options.mqtt_bind is not None:
        # Home Assistant is configured for this exact address: taken means a start-up error.
        host, port = _host_port(options.mqtt_bind, "--mqtt-bind")
        check_tcp_port_free(host, port, key_path="--mqtt-bind")
    else:
        host, port = _DEFAULT_BROKER
        if not tcp_port_free(host, port):
            from bmsgate.mqtt.broker import free_port  # noqa: PLC0415

            port = free_port(host)
            _LOGGER.info(
                "demo: port %d is taken (another broker?); the embedded broker uses %d", _DEFAULT_BROKER[1], port
            )
    return _EmbeddedBrokerSink(host, port, build)


class _FleetDemoSink:
    """The demo's fleet: a local fleet server with simulated sites, and this gateway's own agent reporting to it."""

    name = "fleet"

    def __init__(self, options: DemoOptions, context: OutputContext) -> None:
        self._options = options
        self._context = context

    async def run(self, hub: SnapshotHub) -> None:
        from bmsgate.fleet.agent.settings import FleetSettings  # noqa: PLC0415 - needs the [fleet] extra
        from bmsgate.fleet.demo import FleetDemo, FleetDemoOptions  # noqa: PLC0415

        host, port = ("127.0.0.1", None)
        if self._options.fleet_http is not None:
            host, port = _host_port(self._options.fleet_http, "--fleet-http")
        options = FleetDemoOptions(gateways=self._options.fleet_sites or 0, http_host=host, http_port=port)
        async with FleetDemo(options) as demo:
            _LOGGER.warning("demo: %s", demo.banner())
            for sink in self._context.supervisor.sinks:
                if isinstance(sink, ConsoleSink):
                    sink.add_notice(demo.banner())
            credentials = demo.enroll_to_file("demo-gateway")
            await demo.apply()
            town, province, lat, lon = SOUTH_AFRICAN_TOWNS[1]
            settings = FleetSettings.model_validate(
                {
                    "credentials": credentials,
                    "name": "bmsgate demo gateway",
                    "site": f"{town}, {province}",
                    "tags": ["demo"],
                    "interval": 5.0,
                    "location": {"type": "fixed", "lat": lat, "lon": lon},
                    "buffer": {"path": demo.running.data.root / "demo-gateway-buffer.sqlite"},
                }
            )
            (agent,) = build_output("fleet", settings, self._context)
            async with asyncio.TaskGroup() as group:
                group.create_task(agent.run(hub), name="demo-fleet-agent")
                group.create_task(demo.run_sites(), name="demo-fleet-sites")


_DEMO_STATE: Final = Path(tempfile.gettempdir()) / "bmsgate-demo-state"
_DEFAULT_BROKER: Final = ("127.0.0.1", 1883)
_DEFAULT_MODBUS: Final = ("127.0.0.1", 5020)


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {text!r}", key_path=option)
    return host, int(port)

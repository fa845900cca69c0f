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
import dataclasses
from typing import Any, Final

from bmsgate.app.gateway import SinkBuilder
from bmsgate.catalog import Kind, default_catalog

__all__ = ["BANK", "DemoOptions", "demo_config", "demo_sink_builders"]

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
    modbus_tcp: str | None = "127.0.0.1:5020"
    """HOST:PORT of the Modbus TCP server; None: no Modbus."""
    modbus_map: str = "generic"
    can_log: str | None = None
    can_profile: str = "pylon"

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
            "--modbus-tcp", metavar="HOST:PORT", default="127.0.0.1:5020", help="Modbus TCP server address"
        )
        modbus.add_argument("--no-modbus", action="store_true", help="no Modbus server")
        parser.add_argument("--modbus-map", metavar="NAME|FILE", default="generic", help="register map")
        parser.add_argument("--can-log", metavar="FILE", help="write every CAN frame sent (candump log format)")
        parser.add_argument("--can-profile", metavar="NAME", default="pylon", help="inverter CAN profile")

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
        )


def _pick(preferred: str) -> str:
    return preferred if preferred in default_catalog().names(Kind.PROTOCOL) else "jbd"


def demo_config(
    *, time_scale: float = 30.0, poll_interval: float = 2.0, plain: bool = False, options: DemoOptions | None = None
) -> dict[str, Any]:
    """The demo's configuration as the mapping a config file would hold."""
    del options  # outputs are added by demo_sink_builders; the mapping holds the batteries
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
        "outputs": {"console": {"mode": "plain" if plain else "auto", "interval": max(5.0, poll_interval)}},
    }


def demo_sink_builders(options: DemoOptions) -> list[SinkBuilder]:
    """Builders for the demo's network outputs (each starts only what its option asks for)."""
    from bmsgate.app.outputs import demo_output_builders  # noqa: PLC0415 - optional outputs load lazily

    return demo_output_builders(options)

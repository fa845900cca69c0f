"""``bmsgate demo``: simulated batteries with every output on localhost.

Its own module so that ``bmsgate run`` does not import the demo's wiring (simulated inverters, the
fleet's site list, pseudo-terminals).
"""

from __future__ import annotations

import argparse
from typing import Any

from bmsgate.app.cli.arguments import positive_float
from bmsgate.app.cli.gateway import start_gateway
from bmsgate.app.config import config_from_mapping
from bmsgate.app.demo import DemoOptions, demo_config, demo_sink_builders

__all__ = ["add_parsers"]


def add_parsers(commands: Any) -> None:
    """Register ``demo`` on the CLI's subparsers."""
    demo = commands.add_parser(
        "demo",
        help="simulated batteries with every output on localhost (no hardware, no configuration)",
        description=(
            "Runs several simulated batteries (different protocols and cell counts, one drifting cell, one "
            "developing fault) with every output on localhost and a live view."
        ),
    )
    demo.add_argument(
        "--duration", type=positive_float(), metavar="SECONDS", help="exit by itself after this many seconds"
    )
    demo.add_argument(
        "--time-scale", type=positive_float(10_000), default=30.0, help="simulated seconds per real second"
    )
    demo.add_argument(
        "--poll-interval", type=positive_float(3600), default=2.0, help="seconds between polls of each battery"
    )
    demo.add_argument("--plain", action="store_true", help="plain log lines instead of the live view")
    DemoOptions.add_arguments(demo)
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    options = DemoOptions.from_args(args)
    gateway_config = config_from_mapping(
        demo_config(time_scale=args.time_scale, poll_interval=args.poll_interval, plain=args.plain, options=options),
        source="<demo>",
    )
    return start_gateway(gateway_config, args, demo_sink_builders(options))

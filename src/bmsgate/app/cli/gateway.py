"""``bmsgate run`` and ``bmsgate config check`` (and the start that ``bmsgate demo`` shares)."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmsgate.app.cli.arguments import positive_float, print_help
from bmsgate.app.config import GatewayConfig, load_config
from bmsgate.app.console import stdout_is_terminal
from bmsgate.app.gateway import Gateway, build_gateway, check_start, configure_logging, run_gateway
from bmsgate.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_parsers", "start_gateway"]


def add_parsers(commands: Any) -> None:
    """Register the subcommands on the CLI's subparsers."""
    run = commands.add_parser("run", help="run the gateway from a configuration file (production)")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML configuration file")
    run.add_argument("--duration", type=positive_float(), metavar="SECONDS", help="stop after this many seconds")
    run.set_defaults(handler=_run)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION")
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(handler=_config_check)
    # Like `protocols` without an action (which lists): no action is a question, not a mistake.
    config.set_defaults(handler=lambda _args: print_help(config))


def _console_and_logging(gateway_config: GatewayConfig, debug: bool) -> Console | None:
    """The live view's console with log records above it, or None: plain lines, logging as configured.

    Without the live view, rich is never imported (the plain console writes its lines itself).
    """
    console_settings = gateway_config.outputs.console
    live = console_settings.enabled and (
        console_settings.mode == "live" or (console_settings.mode == "auto" and stdout_is_terminal())
    )
    if not live:
        configure_logging(gateway_config.logging, debug=debug)
        return None
    from rich.console import Console  # noqa: PLC0415 - the live view only
    from rich.logging import RichHandler  # noqa: PLC0415

    console = Console()
    # Log records print above the live view instead of tearing it.
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False))
    root.setLevel(logging.DEBUG if debug else getattr(logging, gateway_config.logging.level))
    return console


def start_gateway(
    gateway_config: GatewayConfig, args: argparse.Namespace, builders: list[Any], *, source: str | None = None
) -> int:
    """Run the gateway of `gateway_config` with the outputs of `builders` until it ends; returns the exit status."""
    console = _console_and_logging(gateway_config, args.debug)
    if gateway_config.outputs.fleet is not None:
        from bmsgate.fleet.agent.wiring import prepare_updates  # noqa: PLC0415 - the fleet needs the [mqtt] extra

        # Before the definitions load: the gateway runs the committed pack slot (a pending one rolls back).
        prepare_updates(gateway_config)
    try:
        gateway: Gateway = build_gateway(gateway_config, sink_builders=builders, console=console)
    except ConfigError as exc:
        raise exc.with_source(source) if source else exc from None
    asyncio.run(run_gateway(gateway, duration=args.duration))
    if gateway_config.outputs.fleet is not None:
        from bmsgate.fleet.agent.updates.software import RESTART  # noqa: PLC0415 - with the fleet only

        # After a software switch or revert: a distinct status, and systemd starts `current` again.
        return RESTART.exit_code()
    return 0


def _run(args: argparse.Namespace) -> int:
    from bmsgate.app.outputs import configured_sink_builders  # noqa: PLC0415 - optional outputs load lazily

    gateway_config = load_config(args.config)
    try:
        check_start(gateway_config, ports=True)
    except ConfigError as exc:
        raise exc.with_source(args.config) from None
    return start_gateway(gateway_config, args, configured_sink_builders(), source=args.config)


def _config_check(args: argparse.Namespace) -> int:
    from bmsgate.app.outputs import OUTPUTS, configured_sink_builders  # noqa: PLC0415

    gateway_config = load_config(Path(args.file))
    # Build everything `run` would build (protocols, transports, register maps, CAN profiles, bank
    # membership) without starting anything, so "ok" here means `run` will start.
    from rich.console import Console  # noqa: PLC0415 - its report only

    problems: list[ConfigProblem] = []
    try:
        check_start(gateway_config, ports=False)
    except ConfigError as exc:
        problems += exc.problems
    try:
        build_gateway(gateway_config, sink_builders=configured_sink_builders(), stream=io.StringIO())
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems=problems).with_source(args.file)
    console = Console(highlight=False)
    sections = ["console", *(row.section for row in OUTPUTS)]
    outputs = [name for name in sections if getattr(gateway_config.outputs, name, None) is not None]
    console.print(f"[green]ok[/green] {args.file}: {len(gateway_config.batteries)} batteries")
    for battery in gateway_config.batteries:
        source = battery.protocol or str(battery.protocol_file)
        console.print(
            f"  {battery.id:<16} {source:<10} {battery.transport.type:<10} every {battery.poll_interval:g} s, "
            f"stale after {battery.stale_budget:g} s"
        )
    console.print(f"  outputs: {', '.join(outputs)}")
    console.print(f"  state: {gateway_config.state_dir}")
    if any(row.inverter and getattr(gateway_config.outputs, row.section, None) is not None for row in OUTPUTS):
        bank = gateway_config.inverter.batteries or tuple(battery.id for battery in gateway_config.batteries)
        console.print(f"  inverter bank: {', '.join(bank)} (one controller for every inverter output)")
    return 0

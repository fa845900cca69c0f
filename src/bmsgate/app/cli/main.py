"""The ``bmsgate`` command line.

Every user error (bad config, bad hex, unreachable battery) ends in one clear line on stderr and a
non-zero exit status; tracebacks are for bugs only (and shown with ``--debug``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bmsgate import __version__
from bmsgate.app.cli.arguments import int_range, positive_float
from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import BmsgateError, ConfigError, DefinitionError, FrameError
from bmsgate.protocols import CompiledProtocol, decode, decode_hex_frames
from bmsgate.protocols.definition import RequestSpec, parse_hex
from bmsgate.protocols.framing import Frame

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

Handler = Callable[[argparse.Namespace], int]

# Modules that add their own subcommands, with the commands each adds: each has `add_parsers(subparsers)`
# and sets `handler=` defaults on its parsers, so this file does not grow with every feature. A command
# line that names one of them imports only its module: `bmsgate run` never loads the fleet server's,
# the pack signer's or the BLE scanner's libraries (a test keeps this table true to the modules).
COMMAND_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "bmsgate.app.cli.gateway": ("run", "config"),
    "bmsgate.app.cli.demo": ("demo",),
    "bmsgate.app.cli.ble": ("scan", "probe"),
    "bmsgate.app.cli.capture": ("capture",),
    "bmsgate.app.cli.catalog": ("catalog",),
    "bmsgate.app.cli.inverters": ("inverters",),
    "bmsgate.app.cli.fleet": ("fleet",),
    "bmsgate.app.cli.pack": ("pack",),
}
OWN_COMMANDS: Final[tuple[str, ...]] = ("read", "decode", "protocols")
"""The commands this module adds itself."""


def command_modules(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The modules whose subcommands a parser for `argv` needs: all of them for help or an unknown command.

    The global options take no value, so the first word that is not an option is the command.
    """
    command = next((word for word in argv or () if not word.startswith("-")), None)
    if command in OWN_COMMANDS:
        return ()
    owners = tuple(module for module, commands in COMMAND_MODULES.items() if command in commands)
    return owners or tuple(COMMAND_MODULES)


def _stdout() -> Console:
    from rich.console import Console  # noqa: PLC0415 - `bmsgate run` prints no rich text

    return Console(highlight=False)


def _load_protocol(args: argparse.Namespace) -> CompiledProtocol:
    protocol_file = getattr(args, "protocol_file", None)
    return default_catalog().protocol(protocol_file or args.protocol)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- read / decode ------------------------------------------------------------------------------------


def _secret_from_environment(name: str) -> bytes:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set (or empty)", key_path="--secret-env")
    return value.encode()


def _read(args: argparse.Namespace) -> int:
    from bmsgate.runtime.client import BatteryClient, ClientOptions  # noqa: PLC0415 - keep `--help` fast
    from bmsgate.runtime.simulation import SIMULATED_SECRET  # noqa: PLC0415
    from bmsgate.transports.base import Transport  # noqa: PLC0415

    transport: Transport
    if args.replay:
        from bmsgate.capture.replayfile import read_replay  # noqa: PLC0415
        from bmsgate.transports.replay import ReplayTransport  # noqa: PLC0415

        capture = read_replay(args.replay)
        name = args.protocol_file or args.protocol or capture.protocol
        if not name:
            raise ConfigError("the replay file does not name its protocol; pass --protocol NAME", key_path="--protocol")
        protocol = default_catalog().protocol(name)
        # The replay answers a login by the bytes around the secret, whatever the secret is.
        transport = ReplayTransport(capture, protocol=protocol)
    else:
        from bmsgate.runtime.simulation import PackConfig  # noqa: PLC0415
        from bmsgate.transports.simulator import SimulatorTransport  # noqa: PLC0415

        protocol = default_catalog().protocol(args.protocol_file or args.simulate)
        pack = PackConfig(cells=args.cells, capacity=args.capacity, ntc_count=args.ntc, name="sim-" + protocol.name)
        transport = SimulatorTransport(protocol, pack)
    # A simulated pack and a replay accept any secret (both know a login by the bytes around it): the stand-in
    # does, unless --secret-env names a variable holding the real one (never a literal on the command line).
    secret = _secret_from_environment(args.secret_env) if args.secret_env else None
    if secret is None and protocol.needs_secret:
        secret = SIMULATED_SECRET
    options = ClientOptions(request_timeout=args.timeout, poll_deadline=max(args.timeout * 4, 5.0), secret=secret)

    async def poll() -> Any:
        async with BatteryClient(protocol, transport, battery_id=args.id, options=options) as client:
            return await client.read()

    snapshot = asyncio.run(poll())
    if not args.replay and len(snapshot.cell_voltages) < args.cells:
        # The definition's reply has room for only so many cells (Renogy: 16 registers); showing
        # fewer than asked for without a word would look like a decoding bug.
        raise ConfigError(
            f"protocol {protocol.name!r} carries at most {len(snapshot.cell_voltages)} cell voltages; "
            f"cannot simulate {args.cells}",
            key_path="--cells",
        )
    if args.json:
        from bmsgate.app.render import display_dict  # noqa: PLC0415

        _print_json(display_dict(snapshot))
    else:
        from bmsgate.app.render import cell_bars, snapshot_table  # noqa: PLC0415

        console = _stdout()
        console.print(snapshot_table(snapshot, title=f"{snapshot.battery_id} ({protocol.title})"))
        console.print(cell_bars(snapshot))
    return EXIT_OK


def _decode(args: argparse.Namespace) -> int:
    protocol = _load_protocol(args)
    variant = getattr(args, "variant", None)
    if variant is not None and variant not in protocol.variant_names:
        choices = ", ".join(protocol.variant_names) or "none: it has a single layout"
        raise ConfigError(f"protocol {protocol.name!r} has no variant {variant!r} ({choices})", key_path="--variant")
    for index, text in enumerate(args.frames, start=1):
        try:
            parse_hex(text)
        except ValueError as exc:
            # A typing mistake on the command line, not a device answering nonsense: a usage error.
            raise ConfigError(str(exc), key_path=f"frame {index}") from None
    try:
        frames = decode_hex_frames(protocol, args.frames)
    except FrameError as exc:
        # Bytes typed on the command line that are not a whole, intact frame: bad input, like bad hex.
        raise ConfigError(str(exc), key_path="frames") from None
    snapshot = decode(protocol, frames, battery_id=args.id, variant=variant)
    for request in _missing_replies(protocol, frames):
        sys.stderr.write(
            f"bmsgate: warning: no reply to {request.name!r} (0x{request.reply:02X}) among the frames; "
            "what it carries is missing from the snapshot\n"
        )
    from bmsgate.app.render import display_dict  # noqa: PLC0415

    _print_json(display_dict(snapshot))
    return EXIT_OK


def _missing_replies(protocol: CompiledProtocol, frames: Sequence[Frame]) -> list[RequestSpec]:
    """The required requests of a poll whose reply type is not among `frames`."""
    given = {frame.key for frame in frames}
    if None in given:  # framing without reply types: nothing to tell the replies apart by
        return []
    return [
        request
        for request in protocol.requests
        if request.required and request.reply is not None and request.reply not in given
    ]


# -- protocols ----------------------------------------------------------------------------------------


def _protocols(args: argparse.Namespace) -> int:
    from bmsgate.protocols import load_protocol_file  # noqa: PLC0415

    if args.protocols_command == "show":
        from bmsgate.app.cli.catalog import print_item  # noqa: PLC0415

        print_item(default_catalog().get(Kind.PROTOCOL, args.name), as_json=args.json)
        return EXIT_OK
    if args.protocols_command == "check":
        protocol = load_protocol_file(args.file)
        _stdout().print(
            f"[green]ok[/green] {args.file}: protocol {protocol.name!r} ({protocol.title}), "
            f"{len(protocol.requests)} requests, {len(protocol.definition.replies)} reply types"
        )
        return EXIT_OK
    rows = _protocol_rows()
    if args.json:
        _print_json(rows)
    else:
        console = _stdout()
        for row in rows:
            mark = "[green]verified[/green]  " if row["verified"] else "[yellow]unverified[/yellow]"
            same = f" (same as {row['same_as']})" if row["same_as"] else ""
            console.print(f"[bold]{row['name']:<12}[/bold] {mark} {row['title']}{same}")
    return EXIT_OK


def _protocol_rows() -> list[dict[str, Any]]:
    """One row per protocol and per alias (``same_as`` names the protocol an alias decodes with)."""
    rows: list[dict[str, Any]] = []
    for name in default_catalog().names(Kind.PROTOCOL):
        protocol = default_catalog().protocol(name)
        gatt = protocol.gatt_profiles
        definition = protocol.definition
        shared = {
            "ble_service": gatt[0].service if gatt else None,
            "serial": definition.serial is not None,
            "variants": list(protocol.variant_names),
            "matchers": [matcher.model_dump(exclude_none=True) for matcher in definition.match],
            "alarms": sorted(alarm.value for alarm in protocol.possible_alarms),
        }
        # Verified: decodes conformance vectors of frames captured from a real BMS (the definition's or the
        # alias's `verified` key; tests/protocols/test_vectors.py holds it to spec/vectors).
        rows.append(
            {
                "name": name,
                "title": protocol.title,
                "same_as": None,
                "aliases": [alias.id for alias in definition.aliases],
                "verified": definition.verified.startswith("real frames: "),
                "evidence": definition.verified or None,
                **shared,
            }
        )
        rows += [
            {
                "name": alias.id,
                "title": alias.title,
                "same_as": name,
                "aliases": [],
                "verified": alias.verified.startswith("real frames: "),
                "evidence": alias.verified or None,
                **shared,
            }
            for alias in definition.aliases
        ]
    return sorted(rows, key=lambda row: str(row["name"]))


# -- parser -------------------------------------------------------------------------------------------


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--protocol", "-p", help=f"protocol name ({', '.join(default_catalog().names(Kind.PROTOCOL))})")
    group.add_argument("--protocol-file", metavar="FILE", type=Path, help="a protocol definition YAML file instead")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser (public for documentation tooling and tests).

    Given the command line `argv`, only the subcommand modules it needs are imported (see
    :func:`command_modules`); without it, every subcommand is there.
    """
    parser = argparse.ArgumentParser(
        prog="bmsgate",
        description="Read lithium-battery BMSes over BLE/serial and feed Home Assistant and inverters.",
    )
    parser.add_argument("--version", action="version", version=f"bmsgate {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    read = commands.add_parser("read", help="poll one battery once and print it")
    source = read.add_mutually_exclusive_group(required=True)
    source.add_argument("--simulate", metavar="PROTOCOL", help="read a built-in simulated battery")
    source.add_argument("--replay", metavar="FILE", help="replay a recorded conversation (bmsgate-replay file)")
    _add_protocol_options(read)
    read.add_argument("--json", action="store_true", help="print the JSON snapshot")
    read.add_argument("--id", default="battery", help="battery id to put in the snapshot")
    read.add_argument("--cells", type=int_range(1, 32), default=16, help="simulated cell count, 1-32 (default 16)")
    read.add_argument("--capacity", type=positive_float(10_000), default=100.0, help="simulated capacity in Ah")
    read.add_argument("--ntc", type=int_range(0, 8), default=2, help="simulated temperature sensors, 0-8")
    read.add_argument("--timeout", type=positive_float(600), default=2.0, help="seconds to wait for each reply")
    read.add_argument(
        "--secret-env",
        metavar="NAME",
        help="environment variable holding the secret a login sends (default: a stand-in both sources accept)",
    )
    read.set_defaults(handler=_read)

    dec = commands.add_parser(
        "decode",
        help="decode reply frames given as hex",
        description="Decode the raw reply frames of one poll (hex, spaces allowed) and print the JSON snapshot.",
    )
    _add_protocol_options(dec)
    dec.add_argument("frames", nargs="+", metavar="HEX", help="one reply frame per argument")
    dec.add_argument("--id", default="battery", help="battery id to put in the snapshot")
    dec.add_argument(
        "--variant",
        metavar="NAME",
        help="force a frame layout (e.g. jk02_24s / jk02_32s for JK) instead of the one the frames select",
    )
    dec.set_defaults(handler=_decode)

    protocols = commands.add_parser("protocols", help="list, show or check protocol definitions")
    protocols_commands = protocols.add_subparsers(dest="protocols_command", metavar="ACTION")
    listing = protocols_commands.add_parser("list", help="list the protocols along the catalog search path")
    listing.add_argument("--json", action="store_true")
    show = protocols_commands.add_parser("show", help="one definition: a summary, or its canonical JSON")
    show.add_argument("name", metavar="NAME_OR_PATH")
    show.add_argument("--json", action="store_true", help="print the canonical JSON (what the sha256 covers)")
    check = protocols_commands.add_parser("check", help="validate a protocol definition file")
    check.add_argument("file")
    protocols.set_defaults(json=False, handler=_protocols)
    for module_name in command_modules(argv):
        importlib.import_module(module_name).add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bmsgate`` console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "decode" and not (args.protocol or args.protocol_file):
        parser.error("decode needs --protocol NAME or --protocol-file FILE")
    try:
        handler: Handler = args.handler
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ConfigError, DefinitionError) as exc:
        _fail(exc, args.debug)
        return EXIT_USAGE
    except BmsgateError as exc:
        _fail(exc, args.debug)
        return EXIT_FAILURE


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        logging.getLogger("bmsgate").exception("failed")
    # One line per problem, so that a file with several mistakes is fixed in one go.
    problems = exc.problems if isinstance(exc, ConfigError) else (exc,)
    for problem in problems:
        sys.stderr.write(f"bmsgate: error: {problem}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

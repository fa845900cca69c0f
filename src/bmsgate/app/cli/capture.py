"""``bmsgate capture analyze``: what a phone app said to a BMS, decoded."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from bmsgate.app.cli.arguments import print_help

__all__ = ["add_parsers"]


def add_parsers(commands: Any) -> None:
    """Register the subcommands on the CLI's subparsers."""
    capture = commands.add_parser("capture", help="reverse-engineering tools for captured BLE traffic")
    actions = capture.add_subparsers(dest="capture_command", metavar="ACTION")
    capture.set_defaults(handler=lambda _args: print_help(capture))
    analyze = actions.add_parser(
        "analyze",
        help="analyse an Android btsnoop log, a pcap/pcapng (HCI H4) or an nRF Sniffer capture",
        description=(
            "Extracts ATT writes and notifications per connection and handle, pairs requests with replies, "
            "and runs every protocol definition over the traffic to say which protocol it is."
        ),
    )
    analyze.add_argument("file", help="btsnoop_hci.log, .pcap or .pcapng")
    analyze.add_argument("--json", action="store_true", help="print the report as JSON")
    analyze.add_argument(
        "--limit",
        metavar="N",
        type=_count,
        help="with --json: list at most N events, exchanges and polls per match (totals stay exact)",
    )
    analyze.add_argument("--export", metavar="FILE", help="write a replay file for `bmsgate read --replay`")
    analyze.add_argument("--skeleton", metavar="FILE", help="write a starting protocol definition (YAML)")
    analyze.set_defaults(handler=_analyze)


def _analyze(args: argparse.Namespace) -> int:
    from bmsgate.capture.command import run_capture_analyze  # noqa: PLC0415 - keep `--help` fast

    return run_capture_analyze(
        args.file,
        as_json=args.json,
        export=args.export,
        skeleton=args.skeleton,
        console=Console(highlight=False),
        error_console=Console(stderr=True, highlight=False),
        limit=args.limit,
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value

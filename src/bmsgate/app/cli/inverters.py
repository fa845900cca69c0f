"""``bmsgate inverters list``: every way to talk to an inverter — CAN profiles, Modbus maps, RS485 dialects.

CAN profiles and register maps come from the catalog (so a user's own files show up too); the RS485
dialects are built in (inverter/rs485/pylontech.py). Each row says which inverters it is known to fit
and how that is known ("real frames" when it was checked against captured frames).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from bmsgate.catalog import Kind, default_catalog

__all__ = ["add_parsers", "inverter_rows"]


def inverter_rows() -> list[dict[str, Any]]:
    """One row per profile, map and dialect: name, transport, description, inverters, verified."""
    from bmsgate.inverter.rs485.pylontech import DIALECTS  # noqa: PLC0415

    catalog = default_catalog()
    rows: list[dict[str, Any]] = []
    for kind, transport in ((Kind.CAN_PROFILE, "CAN"), (Kind.REGISTER_MAP, "Modbus")):
        for item in catalog.items(kind):
            definition: Any = item.definition
            rows.append(
                {
                    "name": item.name,
                    "transport": transport,
                    "description": definition.description.strip(),
                    "inverters": list(definition.inverters),
                    "verified": definition.verified or None,
                    "real_frames": "real frames" in definition.verified,
                    "source": str(item.source),
                }
            )
    rows.extend(
        {
            "name": dialect.name,
            "transport": "RS485",
            "description": dialect.description,
            "inverters": list(dialect.inverters),
            "verified": dialect.verified,
            "real_frames": "real frames" in dialect.verified,
            "source": "builtin:bmsgate.inverter.rs485",
            "battery_type": dialect.battery_type,
            "on_lost_communication": dialect.on_lost,
        }
        for dialect in DIALECTS.values()
    )
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = inverter_rows()
    if args.transport:
        rows = [row for row in rows if row["transport"].lower() == args.transport]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    table = Table("name", "transport", "real frames", box=None)
    table.add_column("known to fit", overflow="fold")
    table.add_column("how it is known", overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            row["transport"],
            "yes" if row["real_frames"] else "no",
            ", ".join(row["inverters"]) or "-",
            row["verified"] or "-",
        )
    Console(highlight=False).print(table)
    return 0


def add_parsers(commands: Any) -> None:
    """Add ``inverters list``."""
    inverters = commands.add_parser("inverters", help="inverter profiles: CAN, RS485 and Modbus")
    actions = inverters.add_subparsers(dest="inverters_command", metavar="ACTION")
    # Like `protocols` and `catalog` without an action: list.
    inverters.set_defaults(handler=_list, transport=None, json=False)
    listing = actions.add_parser("list", help="every profile with its transport, the inverters it fits, verification")
    listing.add_argument("--transport", choices=["can", "rs485", "modbus"], help="only this transport")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

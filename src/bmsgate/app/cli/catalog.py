"""``bmsgate catalog``: every data file along the search path, and one item's canonical IR."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from bmsgate.catalog import BUILTIN_DIR, Catalog, CatalogItem, Kind, default_catalog

__all__ = ["add_parsers", "print_item"]


def _catalog(args: argparse.Namespace) -> Catalog:
    system_dir, packs_dir = getattr(args, "system_dir", None), getattr(args, "packs_dir", None)
    if system_dir is None and packs_dir is None:
        return default_catalog()
    return Catalog(system_dir=system_dir, packs_dir=packs_dir)


def _list(args: argparse.Namespace) -> int:
    kind = Kind(args.kind) if args.kind else None
    items = _catalog(args).items(kind, shadowed=args.all)
    if args.json:
        sys.stdout.write(json.dumps([item.summary() for item in items], indent=2, ensure_ascii=False) + "\n")
        return 0
    table = Table("kind", "name", "version", "sha256", box=None)
    table.add_column("source", overflow="fold")  # a path cut short would hide which file won
    for item in items:
        table.add_row(item.kind.value, item.name, item.version or "-", item.sha256[:16], _short(item))
    Console(highlight=False).print(table)
    return 0


def _short(item: CatalogItem) -> str:
    # Package data sits deep in site-packages; its place inside the package says all there is to say.
    path = item.source.path.replace(str(BUILTIN_DIR), "bmsgate/data", 1)
    return f"{item.source.layer.value}:{path}"


def _details(item: CatalogItem) -> list[tuple[str, str]]:
    ir: dict[str, Any] = item.definition.ir()
    if item.kind is Kind.PROTOCOL:
        return [
            ("title", str(ir.get("title", ""))),
            ("requests", str(len(ir["requests"]))),
            ("reply types", str(len(ir["replies"]))),
            ("requires", ", ".join(ir["requires"]) or "-"),
        ]
    if item.kind is Kind.REGISTER_MAP:
        return [("description", str(ir.get("description", ""))), ("registers", str(len(ir["registers"])))]
    frames = ", ".join(f"0x{frame:X}" for frame in ir["frames"])
    return [("description", str(ir.get("description", ""))), ("dbc", str(ir["dbc"])), ("frames", frames)]


def print_item(item: CatalogItem, *, as_json: bool) -> None:
    """The item's canonical JSON (exactly the bytes its sha256 covers), or a short summary.

    Raises:
        DefinitionError: the item passes its schema but the engine cannot build it (a CAN profile naming a
            frame its DBC lacks): an identity is never shown for something a gateway would refuse.
    """
    _ = item.compiled
    if as_json:
        sys.stdout.write(item.canonical_json().decode("utf-8") + "\n")
        return
    rows = [
        ("kind", item.kind.value),
        ("name", item.name),
        ("version", item.version or "-"),
        ("sha256", item.sha256),
        ("source", str(item.source)),
        *_details(item),
    ]
    console = Console(highlight=False)
    for label, value in rows:
        console.print(f"[bold]{label:<12}[/bold] {value}")


def _show(args: argparse.Namespace) -> int:
    print_item(_catalog(args).get(Kind(args.kind), args.name), as_json=args.json)
    return 0


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--system-dir", metavar="DIR", help="system layer (default: $BMSGATE_SYSTEM_DIR or /etc/bmsgate)"
    )
    parser.add_argument("--packs-dir", metavar="DIR", help="activated packs layer")


def add_parsers(commands: Any) -> None:
    """Add ``catalog list`` and ``catalog show``."""
    kinds = [kind.value for kind in Kind]
    catalog = commands.add_parser("catalog", help="protocols, register maps and CAN profiles along the search path")
    actions = catalog.add_subparsers(dest="catalog_command", metavar="ACTION")
    # Like `protocols` without an action: list.
    catalog.set_defaults(handler=_list, kind=None, all=False, json=False, system_dir=None, packs_dir=None)
    listing = actions.add_parser("list", help="every item: kind, name, version, sha256, source")
    listing.add_argument("--kind", choices=kinds, help="only this kind")
    listing.add_argument("--all", action="store_true", help="also items a later layer shadows")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_search_options(listing)
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one item: a summary, or its canonical JSON")
    show.add_argument("kind", choices=kinds)
    show.add_argument("name", metavar="NAME_OR_PATH", help="a name along the search path, or a file path")
    show.add_argument("--json", action="store_true", help="print the canonical JSON (what the sha256 covers)")
    _add_search_options(show)
    show.set_defaults(handler=_show)

"""Moving a fleet store between backends (SQLite → PostgreSQL, or back), and its command line.

Every table is copied in dependency order in chunks, through the repository interface (each backend
exports and imports a portable row form), into a migrated target. Keys already in the target are kept, so
an interrupted copy can simply be run again. Stop the server first (or accept that rows written during the
copy may be missing from the target).

    python -m bmsgate.fleet.server.store.transfer --from-data /var/lib/bmsgate/fleet \\
        --to-postgres postgresql://bmsgate@localhost/fleet
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path

from bmsgate.fleet.server.store import open_store
from bmsgate.fleet.server.store.repository import Repository, StoreError
from bmsgate.fleet.server.store.settings import StoreSettings

__all__ = ["copy_store", "main"]


async def copy_store(source: Repository, target: Repository) -> dict[str, int]:
    """Copy every row of `source` into `target`; the row count per table."""
    counts: collections.Counter[str] = collections.Counter()
    async for table, rows in source.export_rows():
        await target.import_rows(table, rows)
        counts[table] += len(rows)
    return dict(counts)


def _settings(data: Path | None, postgres: str | None) -> StoreSettings:
    return StoreSettings(data_dir=data, postgres_url=postgres)


async def _run(arguments: argparse.Namespace) -> dict[str, int]:
    source = await open_store(_settings(arguments.from_data, arguments.from_postgres))
    try:
        target = await open_store(_settings(arguments.to_data, arguments.to_postgres))
        try:
            return await copy_store(source, target)
        finally:
            await target.close()
    finally:
        await source.close()


def main(argv: list[str] | None = None) -> int:
    """Copy a store; exit status 0 on success, 1 on a store error, 2 on bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m bmsgate.fleet.server.store.transfer", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-data", type=Path, help="SQLite data directory to copy from")
    source.add_argument("--from-postgres", help="PostgreSQL URL to copy from")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-data", type=Path, help="SQLite data directory to copy into")
    target.add_argument("--to-postgres", help="PostgreSQL URL to copy into")
    arguments = parser.parse_args(argv)
    try:
        counts = asyncio.run(_run(arguments))
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    for table, count in counts.items():
        sys.stdout.write(f"{table}: {count} rows\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

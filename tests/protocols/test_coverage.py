"""docs/protocols/coverage.md lists every built-in and every alias with the status `protocols list` reports."""

from __future__ import annotations

import re
from pathlib import Path

from bmsgate.catalog import Kind, default_catalog

COVERAGE = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "coverage.md"


def _rows() -> dict[str, tuple[str | None, bool]]:
    """id → (same as, verified) from the table of what bmsgate reads."""
    text = COVERAGE.read_text(encoding="utf-8")
    table = text.split("## What bmsgate reads", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str | None, bool]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([a-z0-9-]+)`", cells[0]) if cells else None
        if match is None:
            continue
        same = re.fullmatch(r"`([a-z0-9-]+)`", cells[2])
        rows[match[1]] = (same[1] if same else None, cells[3].strip("*") == "verified")
    return rows


def test_every_protocol_and_alias_has_a_row_with_its_status() -> None:
    catalog = default_catalog()
    expected: dict[str, tuple[str | None, bool]] = {}
    for name in catalog.names(Kind.PROTOCOL):
        definition = catalog.protocol(name).definition
        expected[name] = (None, definition.verified.startswith("real frames: "))
        for alias in definition.aliases:
            expected[alias.id] = (name, alias.verified.startswith("real frames: "))
    assert _rows() == expected


def test_every_row_has_a_page() -> None:
    missing = [name for name in _rows() if not (COVERAGE.parent / f"{name}.md").is_file()]
    assert not missing

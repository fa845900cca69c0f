"""Human-readable renderings of snapshots as rich renderables (and the plain text line, re-exported).

Shared by `bmsgate read` and the live console output so a battery looks the same everywhere; the
plain line itself lives in :mod:`bmsgate.app.plain_lines`, which needs no rich.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from bmsgate.app.plain_lines import format_value as _fmt
from bmsgate.app.plain_lines import plain_line
from bmsgate.model import BatterySnapshot

__all__ = ["cell_bars", "display_dict", "format_duration", "plain_line", "snapshot_table"]

# Digits a person reading `--json` output wants; the snapshot's own JSON form is never rounded.
_JSON_DIGITS: Final[Mapping[str, int]] = {
    "voltage": 3,
    "current": 3,
    "power": 2,
    "soc": 1,
    "soh": 1,
    "remaining_capacity": 3,
    "full_capacity": 3,
    "design_capacity": 3,
    "cell_voltages": 4,
    "cell_min": 4,
    "cell_max": 4,
    "cell_mean": 4,
    "cell_delta": 4,
    "temperatures": 2,
    "temperature_mean": 2,
    "mosfet_temperature": 2,
    "balance_current": 3,
    "time_to_empty": 0,
    "time_to_full": 0,
    "stored_energy": 1,
}

# The bar spans a LiFePO4 cell's useful range; other chemistries still render, just clipped.
_BAR_LOW = 2.8
_BAR_HIGH = 3.65
_BAR_WIDTH = 24


def display_dict(snapshot: BatterySnapshot) -> dict[str, Any]:
    """The snapshot's JSON form with measurements rounded for reading (CLI ``--json``)."""
    data = snapshot.to_dict()
    for key, digits in _JSON_DIGITS.items():
        value = data.get(key)
        if isinstance(value, float):
            data[key] = round(value, digits)
        elif isinstance(value, list):
            data[key] = [round(item, digits) for item in value]
    return data


def format_duration(seconds: float | None) -> str:
    """``3h 25m`` style; ``—`` for None."""
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def snapshot_table(snapshot: BatterySnapshot, *, title: str | None = None) -> Table:
    """Pack values as a two-column table."""
    table = Table(title=title or snapshot.battery_id, box=box.SIMPLE_HEAVY, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    cell_min, cell_max = snapshot.cell_min, snapshot.cell_max
    rows: list[tuple[str, str]] = [
        ("Voltage", _fmt(snapshot.voltage, " V")),
        ("Current", _fmt(snapshot.current, " A")),
        ("Power", _fmt(snapshot.power, " W", 0)),
        ("State of charge", _fmt(snapshot.soc, " %", 0)),
        ("Capacity", f"{_fmt(snapshot.remaining_capacity, ' Ah')} of {_fmt(snapshot.full_capacity, ' Ah')}"),
        ("Stored energy", _fmt(snapshot.stored_energy, " Wh", 0)),
        ("Cycles", _fmt(snapshot.cycles)),
        ("Cells", str(snapshot.cell_count)),
        (
            "Cell min / max",
            f"{_fmt(cell_min.voltage if cell_min else None, ' V', 3)} (#{cell_min.cell if cell_min else '—'}) / "
            f"{_fmt(cell_max.voltage if cell_max else None, ' V', 3)} (#{cell_max.cell if cell_max else '—'})",
        ),
        ("Cell delta", _fmt(None if snapshot.cell_delta is None else snapshot.cell_delta * 1000, " mV", 0)),
        ("Temperatures", ", ".join(f"{t:.1f} °C" for t in snapshot.temperatures) or "—"),
        ("MOSFET temperature", _fmt(snapshot.mosfet_temperature, " °C", 1)),
        (
            "Charge / discharge FET",
            f"{_onoff(snapshot.charge_enabled)} / {_onoff(snapshot.discharge_enabled)}",
        ),
        (
            "Balancing",
            ", ".join(f"#{cell}" for cell in snapshot.balancing_cells)
            if snapshot.balancing_cells
            else _onoff(snapshot.balancing_active),
        ),
        (
            "Time to empty / full",
            f"{format_duration(snapshot.time_to_empty)} / {format_duration(snapshot.time_to_full)}",
        ),
        ("Alarms", ", ".join(sorted(alarm.label for alarm in snapshot.alarms)) or "none"),
    ]
    device = snapshot.device
    identity = " · ".join(
        part
        for part in (
            device.model,
            f"sw {device.software_version}" if device.software_version else None,
            f"hw {device.hardware_version}" if device.hardware_version else None,
            f"made {device.production_date.isoformat()}" if device.production_date else None,
            f"s/n {device.serial_number}" if device.serial_number else None,
        )
        if part
    )
    if identity:
        rows.append(("Device", identity))
    for name, value in rows:
        style = "bold red" if name == "Alarms" and snapshot.alarms else None
        table.add_row(name, Text(value, style=style) if style else value)
    return table


def _onoff(value: bool | None) -> str:
    return "—" if value is None else ("on" if value else "off")


def cell_bars(snapshot: BatterySnapshot, *, width: int = _BAR_WIDTH, columns: int = 1) -> RenderableType:
    """One bar per cell; the lowest cell in blue, the highest in red, balancing cells marked.

    With ``columns > 1`` the bars are laid out top-to-bottom in that many columns (compact views).
    """
    if not snapshot.cell_voltages:
        return Text("no cell voltages reported", style="dim")
    cell_min, cell_max = snapshot.cell_min, snapshot.cell_max
    balancing = set(snapshot.balancing_cells or ())
    lines = []
    for number, voltage in enumerate(snapshot.cell_voltages, start=1):
        fraction = min(max((voltage - _BAR_LOW) / (_BAR_HIGH - _BAR_LOW), 0.0), 1.0)
        filled = round(fraction * width)
        style = "green"
        if cell_max and number == cell_max.cell and snapshot.cell_count > 1:
            style = "bold red"
        elif cell_min and number == cell_min.cell and snapshot.cell_count > 1:
            style = "bold blue"
        line = Text(f"{number:>2} ")
        line.append("█" * filled, style=style)
        line.append("░" * (width - filled), style="dim")
        line.append(f" {voltage:.3f} V")
        if number in balancing:
            line.append(" ⇄", style="yellow")
        lines.append(line)
    if columns <= 1:
        return Group(*lines)
    rows = -(-len(lines) // columns)
    grid = Table.grid(padding=(0, 3))
    for _ in range(min(columns, len(lines))):
        grid.add_column()
    for row in range(rows):
        grid.add_row(
            *[lines[row + rows * column] if row + rows * column < len(lines) else "" for column in range(columns)]
        )
    return grid

"""Plain-text renderings of a snapshot (no rich): the console's log lines and their value formats.

Kept apart from :mod:`bmsgate.app.render` (rich renderables) so that a gateway printing plain lines to
journald, a pipe or a file never loads rich.
"""

from __future__ import annotations

import datetime as dt

from bmsgate.model import BatterySnapshot

__all__ = ["format_value", "plain_line"]


def format_value(value: float | None, unit: str = "", digits: int = 2) -> str:
    """``53.12V`` style (an int as it is); ``—`` for None."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.{digits}f}{unit}"


def plain_line(snapshot: BatterySnapshot, *, age: float | None = None, stale: bool = False) -> str:
    """One log-friendly line per battery (for non-terminal output and journald)."""
    cell_min, cell_max = snapshot.cell_min, snapshot.cell_max
    when = dt.datetime.fromtimestamp(snapshot.timestamp).strftime("%H:%M:%S")
    parts = [
        f"{when} {snapshot.battery_id}",
        f"{format_value(snapshot.voltage, 'V')}",
        f"{format_value(snapshot.current, 'A')}",
        f"SoC {format_value(snapshot.soc, '%', 0)}",
        f"cells {format_value(cell_min.voltage if cell_min else None, '', 3)}"
        f"..{format_value(cell_max.voltage if cell_max else None, 'V', 3)}",
    ]
    if snapshot.temperatures:
        parts.append(f"T {max(snapshot.temperatures):.1f}°C")
    if snapshot.alarms:
        parts.append("ALARMS " + ",".join(sorted(alarm.value for alarm in snapshot.alarms)))
    if stale:
        parts.append(f"STALE (age {age:.0f}s)" if age is not None else "STALE")
    return " ".join(parts)

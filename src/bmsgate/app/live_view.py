"""The console's live view on a terminal (rich): an overview row per battery, then each pack's cells.

The overview shows pack values, lowest/highest cell, alarms, data age and link quality; each pack's
cells follow as bars, the lowest cell in blue and the highest in red. Only this module (and the
renderings it shares with ``bmsgate read``) imports rich: a gateway whose console prints plain lines
(journald, pipes, files) never loads it (see :mod:`bmsgate.app.console`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from typing import Final, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from bmsgate.app.console import LinkStatsProvider
from bmsgate.app.render import cell_bars
from bmsgate.model import BatterySnapshot
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.hub import SnapshotHub

__all__ = ["LiveView"]

Justify = Literal["left", "right"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Column:
    key: str
    headers: tuple[str, ...]
    """The full header first, then shorter ones."""
    justify: Justify = "right"


_COLUMNS: Final = (
    _Column("battery", ("battery",), "left"),
    _Column("state", ("state",), "left"),
    _Column("voltage", ("voltage", "V")),
    _Column("current", ("current", "A")),
    _Column("power", ("power", "W")),
    _Column("soc", ("SoC",)),
    _Column("delta", ("cell Δ", "Δ")),
    _Column("range", ("cells min–max", "cells")),
    _Column("temperature", ("max temp", "T")),
    _Column("fets", ("chg/dsg",), "left"),
    _Column("alarms", ("alarms",), "left"),
    _Column("link", ("age · link", "age")),
)
"""The overview's columns, in display order."""

_IMPORTANCE: Final = (
    "battery", "state", "soc", "voltage", "current", "power", "delta", "alarms",
    "temperature", "link", "fets", "range",
)  # fmt: skip
"""Most important first. Where the terminal is too narrow, the least important column is abbreviated,
then dropped, then the next one: the battery, its state and SoC stay legible down to about 30 columns."""

_UNLIMITED: Final = 10_000
_BAR_WIDTH: Final = 12
_BAR_LINE: Final = 3 + _BAR_WIDTH + 8 + 2  # "16 " + bar + " 3.318 V" + " ⇄"
_BAR_GAP: Final = 3
_PANEL_FRAME: Final = 4
_FITS_KEPT: Final = 256
"""Width fits remembered (ages and values change widths now and then; a terminal resize changes all)."""

Row = dict[str, tuple[str | Text, ...]]
"""One battery: for each column key its cell, full form first, then shorter ones."""


def _num(value: float | None, unit: str, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def _flag(value: bool | None) -> str:
    return "—" if value is None else ("on" if value else "OFF")


class LiveView:
    """Renders the hub as the live view.

    Args:
        names: display name per battery id (the id where missing).
        link_stats: link statistics per battery id (success rate, RSSI), if known.
        notices: lines shown above the view; the list is read at every render, so lines added later show.
    """

    def __init__(self, *, names: dict[str, str], link_stats: LinkStatsProvider | None, notices: list[str]) -> None:
        self.names = names
        self.link_stats = link_stats
        self.notices = notices
        # Rendering is the live view's whole cost (about 20 ms a frame for four packs): a battery's cells
        # panel is rendered again only when what it shows changed, and the overview's fit to the width
        # is searched again only when its cells' widths changed.
        self._panels: dict[str, _CachedLines] = {}
        self._fits: dict[tuple[object, ...], tuple[list[str], dict[str, int]]] = {}

    async def run(self, hub: SnapshotHub, console: Console, refresh_per_second: float) -> None:
        """Show the view on `console` until cancelled, refreshed `refresh_per_second` times a second."""
        period = 1.0 / refresh_per_second
        loop = asyncio.get_running_loop()
        with Live(self.render(hub), console=console, auto_refresh=False, transient=False) as live:
            while True:
                # On the shared grid (runtime/cadence.py): redrawn in the wake-up that brought the data.
                await sleep_until(tick_after(loop.time(), period))
                live.update(self.render(hub), refresh=True)

    def render(self, hub: SnapshotHub) -> RenderableType:
        """The whole view, fitted to the width it is rendered at.

        The overview abbreviates and then drops its least important columns, the cell bars use fewer
        columns.
        """
        battery_ids = hub.battery_ids()
        if not battery_ids:
            return Text("no batteries configured", style="dim")
        return _View(lambda console, options: self._layout(hub, battery_ids, console, options))

    def _layout(
        self, hub: SnapshotHub, battery_ids: list[str], console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        for notice in self.notices:
            yield Text(notice, style="bold cyan", overflow="fold")
        yield self._overview(hub, battery_ids, console, options)
        for battery_id in battery_ids:
            yield self._cells_panel(hub, battery_id, options.max_width)

    def _rows(self, hub: SnapshotHub, battery_ids: list[str]) -> list[Row]:
        rows: list[Row] = []
        for battery_id in battery_ids:
            snapshot = hub.latest(battery_id)
            row: Row = {"battery": (Text(self.names.get(battery_id, battery_id), style="bold"),)}
            age = hub.age(battery_id)
            link = self._link_text(battery_id)
            link_short = self._link_text(battery_id, rssi=False)
            if age is not None:
                row["link"] = (f"{age:.0f} s · {link}", f"{age:.0f} s · {link_short}", f"{age:.0f} s")
            else:
                row["link"] = (link, link_short, "—")
            if snapshot is None:
                row["state"] = (Text("waiting", style="dim"),)
                rows.append(row)
                continue
            cell_min, cell_max = snapshot.cell_min, snapshot.cell_max
            alarms = sorted(alarm.label for alarm in snapshot.alarms)
            alarm_style = "bold red" if alarms else "dim"
            row.update(
                {
                    "state": (
                        Text("STALE", style="bold red") if hub.is_stale(battery_id) else Text("fresh", style="green"),
                    ),
                    "voltage": (_num(snapshot.voltage, "V", 2),),
                    "current": (_num(snapshot.current, "A", 1),),
                    "power": (_num(snapshot.power, "W", 0),),
                    "soc": (_num(snapshot.soc, "%", 0),),
                    "delta": (_num(None if snapshot.cell_delta is None else snapshot.cell_delta * 1000, "mV", 0),),
                    "range": (f"{cell_min.voltage:.3f}–{cell_max.voltage:.3f}" if cell_min and cell_max else "—",),
                    "temperature": (_num(snapshot.temperature_max, "°C", 1),),
                    "fets": (f"{_flag(snapshot.charge_enabled)}/{_flag(snapshot.discharge_enabled)}",),
                    "alarms": (
                        Text(", ".join(alarms) or "none", style=alarm_style),
                        Text(f"{len(alarms)} alarm{'s' if len(alarms) > 1 else ''}" if alarms else "none",
                             style=alarm_style),
                    ),
                }
            )  # fmt: skip
            rows.append(row)
        return rows

    def _overview(self, hub: SnapshotHub, battery_ids: list[str], console: Console, options: ConsoleOptions) -> Table:
        """The overview table at the widest form that fits ``options.max_width``."""
        rows = self._rows(hub, battery_ids)
        key = (options.max_width, *(_widths(row) for row in rows))
        fit = self._fits.get(key)
        if fit is not None:
            table = _overview_table(rows, fit[0], fit[1])
            table.expand = True
            return table
        levels = dict.fromkeys(_IMPORTANCE, 0)
        kept = list(_IMPORTANCE)
        unlimited = options.update(max_width=_UNLIMITED)

        def forms(key: str) -> int:
            column = next(c for c in _COLUMNS if c.key == key)
            return max(len(column.headers), *(len(row.get(key, ("",))) for row in rows))

        while True:
            table = _overview_table(rows, kept, levels)
            if Measurement.get(console, unlimited, table).maximum <= options.max_width:
                break
            least = kept[-1]
            if levels[least] + 1 < forms(least):
                levels[least] += 1
            elif len(kept) > 1:
                kept.pop()
            else:
                break
        if len(self._fits) >= _FITS_KEPT:
            self._fits.clear()
        self._fits[key] = (list(kept), dict(levels))
        table.expand = True
        return table

    def _cells_panel(self, hub: SnapshotHub, battery_id: str, width: int) -> RenderableType:
        snapshot = hub.latest(battery_id)
        stale = hub.is_stale(battery_id)
        cached = self._panels.get(battery_id)
        # The snapshot itself is part of the key: it is immutable, and kept alive here its id is not reused.
        key = (id(snapshot), snapshot, stale, width, self.names.get(battery_id))
        if cached is None or cached.key != key:
            cached = self._panels[battery_id] = _CachedLines(
                key, self._new_cells_panel(snapshot, battery_id, stale, width)
            )
        return cached

    def _new_cells_panel(self, snapshot: BatterySnapshot | None, battery_id: str, stale: bool, width: int) -> Panel:
        name = self.names.get(battery_id, battery_id)
        if snapshot is None:
            return Panel(Text("waiting for the first reading…", style="dim"), title=name, title_align="left")
        fitting = (width - _PANEL_FRAME + _BAR_GAP) // (_BAR_LINE + _BAR_GAP)
        columns = max(1, min(4, fitting, -(-snapshot.cell_count // 4)))
        balancing = ", ".join(f"#{cell}" for cell in snapshot.balancing_cells or ()) or "no"
        device = snapshot.device
        subtitle = " · ".join(
            part
            for part in (
                f"{snapshot.cell_count} cells",
                f"balancing {balancing}",
                device.model,
                f"sw {device.software_version}" if device.software_version else None,
            )
            if part
        )
        style = "red" if stale else ("yellow" if snapshot.alarms else "green")
        return Panel(
            cell_bars(snapshot, width=_BAR_WIDTH, columns=columns),
            title=f"[bold]{name}[/bold]",
            title_align="left",
            subtitle=subtitle,
            subtitle_align="left",
            border_style=style,
        )

    def _link_text(self, battery_id: str, *, rssi: bool = True) -> str:
        stats = self.link_stats(battery_id) if self.link_stats else None
        if stats is None or stats.success_rate is None:
            return "link —"
        text = f"link {stats.success_rate * 100:.0f} %"
        if rssi and stats.rssi is not None:
            text += f" RSSI {stats.rssi} dBm"
        return text


class _CachedLines:
    """A renderable rendered once per width: the same lines again while its `key` stays the same."""

    def __init__(self, key: tuple[object, ...], renderable: RenderableType) -> None:
        self.key = key
        self._renderable = renderable
        self._lines: tuple[int, list[list[Segment]]] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self._lines is None or self._lines[0] != options.max_width:
            self._lines = (options.max_width, console.render_lines(self._renderable, options.update(height=None)))
        newline = Segment.line()
        for line in self._lines[1]:
            yield from line
            yield newline


def _widths(row: Row) -> tuple[tuple[int, ...], ...]:
    """The cell widths of every form of every column of a row: what the overview's fit depends on."""
    return tuple(
        tuple(form.cell_len if isinstance(form, Text) else cell_len(form) for form in row.get(column.key, ("",)))
        for column in _COLUMNS
    )


class _View:
    """A renderable laid out only once the width it is rendered at is known."""

    def __init__(self, layout: Callable[[Console, ConsoleOptions], Iterator[RenderableType]]) -> None:
        self._layout = layout

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self._layout(console, options)


def _overview_table(rows: list[Row], kept: list[str], levels: dict[str, int]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    columns = [column for column in _COLUMNS if column.key in kept]
    for column in columns:
        header = column.headers[min(levels[column.key], len(column.headers) - 1)]
        table.add_column(header, justify=column.justify, no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row, columns, levels))
    return table


def _cells(row: Row, columns: list[_Column], levels: dict[str, int]) -> Iterator[str | Text]:
    for column in columns:
        forms = row.get(column.key, ("",))
        yield forms[min(levels[column.key], len(forms) - 1)]

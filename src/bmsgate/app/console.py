"""Console output: a live terminal view, or plain periodic lines when stdout is not a terminal.

The live view shows an overview row per battery (pack values, lowest/highest cell, alarms, data age,
link quality) and then each pack's cells as bars, the lowest cell in blue and the highest in red.
Plain mode (journald, pipes, files) prints one line per battery at most every `interval` seconds,
plus one line when a battery goes stale or recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bmsgate.app.render import cell_bars, plain_line
from bmsgate.runtime.hub import HubUpdate, SnapshotHub

__all__ = ["ConsoleSink"]

LinkStatsProvider = Callable[[str], Any]

_OVERVIEW_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("battery", "left"),
    ("state", "left"),
    ("voltage", "right"),
    ("current", "right"),
    ("power", "right"),
    ("SoC", "right"),
    ("cells min–max", "right"),
    ("max temp", "right"),
    ("chg/dsg", "left"),
    ("alarms", "left"),
    ("age · link", "right"),
)


def _num(value: float | None, unit: str, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def _flag(value: bool | None) -> str:
    return "—" if value is None else ("on" if value else "OFF")


class ConsoleSink:
    """Shows the hub on a terminal."""

    name = "console"

    def __init__(
        self,
        *,
        console: Console | None = None,
        mode: Literal["auto", "live", "plain"] = "auto",
        interval: float = 10.0,
        names: dict[str, str] | None = None,
        link_stats: LinkStatsProvider | None = None,
        refresh_per_second: float = 2.0,
    ) -> None:
        self.console = console or Console()
        self.mode = mode
        self.interval = interval
        self.names = names or {}
        self.link_stats = link_stats
        self.refresh_per_second = refresh_per_second
        self.lines_written = 0

    def _live(self) -> bool:
        return self.mode == "live" or (self.mode == "auto" and self.console.is_terminal)

    async def run(self, hub: SnapshotHub) -> None:
        """Render until cancelled."""
        if self._live():
            await self._run_live(hub)
        else:
            await self._run_plain(hub)

    # -- live view --------------------------------------------------------------------------------

    async def _run_live(self, hub: SnapshotHub) -> None:
        period = 1.0 / self.refresh_per_second
        with Live(self.render(hub), console=self.console, auto_refresh=False, transient=False) as live:
            while True:
                await asyncio.sleep(period)
                live.update(self.render(hub), refresh=True)

    def render(self, hub: SnapshotHub) -> RenderableType:
        """The whole view (public so tests and screenshots can render it without a terminal)."""
        battery_ids = hub.battery_ids()
        if not battery_ids:
            return Text("no batteries configured", style="dim")
        parts: list[RenderableType] = [self._overview(hub, battery_ids)]
        parts.extend(self._cells_panel(hub, battery_id) for battery_id in battery_ids)
        return Group(*parts)

    def _overview(self, hub: SnapshotHub, battery_ids: list[str]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, expand=True)
        for header, justify in _OVERVIEW_COLUMNS:
            table.add_column(header, justify=justify, no_wrap=True)
        for battery_id in battery_ids:
            snapshot = hub.latest(battery_id)
            name = Text(self.names.get(battery_id, battery_id), style="bold")
            age = hub.age(battery_id)
            link = self._link_text(battery_id)
            if snapshot is None:
                table.add_row(name, Text("waiting", style="dim"), *[""] * 8, link)
                continue
            cell_min, cell_max = snapshot.cell_min, snapshot.cell_max
            cells = (
                f"{cell_min.voltage:.3f}–{cell_max.voltage:.3f} Δ{(snapshot.cell_delta or 0) * 1000:.0f} mV"
                if cell_min and cell_max
                else "—"
            )
            alarms = ", ".join(sorted(alarm.label for alarm in snapshot.alarms))
            state = Text("STALE", style="bold red") if hub.is_stale(battery_id) else Text("fresh", style="green")
            table.add_row(
                name,
                state,
                _num(snapshot.voltage, "V", 2),
                _num(snapshot.current, "A", 1),
                _num(snapshot.power, "W", 0),
                _num(snapshot.soc, "%", 0),
                cells,
                _num(snapshot.temperature_max, "°C", 1),
                f"{_flag(snapshot.charge_enabled)}/{_flag(snapshot.discharge_enabled)}",
                Text(alarms or "none", style="bold red" if alarms else "dim"),
                f"{age:.0f} s · {link}" if age is not None else link,
            )
        return table

    def _cells_panel(self, hub: SnapshotHub, battery_id: str) -> Panel:
        snapshot = hub.latest(battery_id)
        name = self.names.get(battery_id, battery_id)
        if snapshot is None:
            return Panel(Text("waiting for the first reading…", style="dim"), title=name, title_align="left")
        columns = max(1, min(4, -(-snapshot.cell_count // 4)))
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
        style = "red" if hub.is_stale(battery_id) else ("yellow" if snapshot.alarms else "green")
        return Panel(
            cell_bars(snapshot, width=12, columns=columns),
            title=f"[bold]{name}[/bold]",
            title_align="left",
            subtitle=subtitle,
            subtitle_align="left",
            border_style=style,
        )

    def _link_text(self, battery_id: str) -> str:
        stats = self.link_stats(battery_id) if self.link_stats else None
        if stats is None or stats.success_rate is None:
            return "link —"
        text = f"link {stats.success_rate * 100:.0f} %"
        if stats.rssi is not None:
            text += f" RSSI {stats.rssi} dBm"
        return text

    # -- plain lines ------------------------------------------------------------------------------

    async def _run_plain(self, hub: SnapshotHub) -> None:
        last_written: dict[str, float] = {}
        last_stale: dict[str, bool] = {}
        with hub.subscribe(self.name) as subscription:
            while True:
                update = await subscription.get()
                if self._should_write(update, last_written, last_stale):
                    self._write_line(update, hub)
                    last_written[update.battery_id] = time.monotonic()
                last_stale[update.battery_id] = update.stale

    def _should_write(self, update: HubUpdate, last_written: dict[str, float], last_stale: dict[str, bool]) -> bool:
        if update.snapshot is None:
            return False
        if last_stale.get(update.battery_id, False) != update.stale:
            return True
        previous = last_written.get(update.battery_id)
        return previous is None or time.monotonic() - previous >= self.interval

    def _write_line(self, update: HubUpdate, hub: SnapshotHub) -> None:
        if update.snapshot is None:
            return
        line = plain_line(update.snapshot, age=hub.age(update.battery_id), stale=update.stale)
        stats = self.link_stats(update.battery_id) if self.link_stats else None
        if stats is not None and stats.success_rate is not None:
            line += f" link {stats.success_rate * 100:.0f}%"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.lines_written += 1

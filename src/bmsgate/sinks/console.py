"""Console output: a live terminal view, or plain periodic lines when stdout is not a terminal.

The live view shows every battery: pack values, per-cell bars with the lowest and highest cell
highlighted, alarms, data age and link quality. Plain mode (journald, pipes, files) prints one line
per battery at most every `interval` seconds, plus one line when a battery goes stale or recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from bmsgate.hub import HubUpdate, SnapshotHub
from bmsgate.render import cell_bars, plain_line, snapshot_table

__all__ = ["ConsoleSink"]

LinkStatsProvider = Callable[[str], Any]


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
        panels: list[RenderableType] = [self._battery_panel(hub, battery_id) for battery_id in hub.battery_ids()]
        if not panels:
            return Text("no batteries configured", style="dim")
        return Group(*panels)

    def _battery_panel(self, hub: SnapshotHub, battery_id: str) -> Panel:
        snapshot = hub.latest(battery_id)
        age = hub.age(battery_id)
        stale = hub.is_stale(battery_id)
        name = self.names.get(battery_id, battery_id)
        status = self._status_text(age, stale, battery_id)
        if snapshot is None:
            body: RenderableType = Text("waiting for the first reading…", style="dim")
        else:
            body = Columns([snapshot_table(snapshot, title=""), cell_bars(snapshot)], padding=(0, 3))
        style = "red" if stale else ("yellow" if snapshot is not None and snapshot.alarms else "green")
        return Panel(body, title=f"[bold]{name}[/bold] ({battery_id})", subtitle=status, border_style=style)

    def _status_text(self, age: float | None, stale: bool, battery_id: str) -> str:
        parts = ["[red]STALE[/red]" if stale else "fresh"]
        if age is not None:
            parts.append(f"age {age:.0f} s")
        stats = self.link_stats(battery_id) if self.link_stats else None
        if stats is not None:
            rate = stats.success_rate
            if rate is not None:
                parts.append(f"link {rate * 100:.0f} %")
            if stats.rssi is not None:
                parts.append(f"RSSI {stats.rssi} dBm")
            if stats.last_error and rate is not None and rate < 1:
                parts.append(f"last error: {stats.last_error[:60]}")
        return " · ".join(parts)

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
        if last_stale.get(update.battery_id) != update.stale:
            return True
        previous = last_written.get(update.battery_id)
        return previous is None or time.monotonic() - previous >= self.interval

    def _write_line(self, update: HubUpdate, hub: SnapshotHub) -> None:
        assert update.snapshot is not None  # checked by _should_write
        line = plain_line(update.snapshot, age=hub.age(update.battery_id), stale=update.stale)
        stats = self.link_stats(update.battery_id) if self.link_stats else None
        if stats is not None and stats.success_rate is not None:
            line += f" link {stats.success_rate * 100:.0f}%"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.lines_written += 1

"""Console output: a live terminal view, or plain periodic lines when stdout is not a terminal.

Plain mode (journald, pipes, files) prints one line per battery at most every `interval` seconds,
plus one line when a battery goes stale or recovers. It writes text itself: rich is imported only
for the live view (:mod:`bmsgate.app.live_view`), so a gateway logging to journald never loads it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Literal

from bmsgate.app.plain_lines import plain_line
from bmsgate.runtime.hub import HubUpdate, SnapshotHub

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from bmsgate.app.live_view import LiveView

__all__ = ["ConsoleSink", "LinkStatsProvider", "stdout_is_terminal"]

LinkStatsProvider = Callable[[str], Any]


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (where ``auto`` mode shows the live view)."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty is not None and isatty())


class ConsoleSink:
    """Shows the hub on a terminal, or as plain lines.

    Args:
        console: the rich console of the live view (created when the live view starts, if not given).
            In plain mode lines go to its file, unless `stream` is given.
        stream: where plain lines go (default: the console's file, else standard output).
        mode: ``live``, ``plain`` or ``auto`` (live on a terminal).
        interval: s between a battery's plain lines (a change of staleness prints at once).
        names: display name per battery id.
        link_stats: link statistics per battery id.
        refresh_per_second: live view refreshes.
    """

    name = "console"

    def __init__(
        self,
        *,
        console: Console | None = None,
        stream: IO[str] | None = None,
        mode: Literal["auto", "live", "plain"] = "auto",
        interval: float = 10.0,
        names: dict[str, str] | None = None,
        link_stats: LinkStatsProvider | None = None,
        refresh_per_second: float = 1.0,
    ) -> None:
        self.console = console
        self.stream = stream
        self.mode = mode
        self.interval = interval
        self.names = names or {}
        self.link_stats = link_stats
        self.refresh_per_second = refresh_per_second
        self.lines_written = 0
        self.notices: list[str] = []
        """Lines shown above the live view (the demo's fleet dashboard address and token), which log lines
        printed above it would scroll out of sight."""
        self._view: LiveView | None = None

    def _live(self) -> bool:
        if self.mode != "auto":
            return self.mode == "live"
        return self.console.is_terminal if self.console is not None else stdout_is_terminal()

    async def run(self, hub: SnapshotHub) -> None:
        """Render until cancelled."""
        if self._live():
            if self.console is None:
                from rich.console import Console  # noqa: PLC0415 - the live view only

                self.console = Console()
            await self._live_view().run(hub, self.console, self.refresh_per_second)
        else:
            await self._run_plain(hub)

    def render(self, hub: SnapshotHub) -> RenderableType:
        """The whole live view (public so tests and screenshots can render it without a terminal).

        It fits itself to the width it is rendered at: the overview abbreviates and then drops its least
        important columns, the cell bars use fewer columns.
        """
        return self._live_view().render(hub)

    def add_notice(self, text: str) -> None:
        """Show `text` above the live view for as long as it runs (plain mode has it in the log already)."""
        self.notices.append(text)

    def _live_view(self) -> LiveView:
        if self._view is None:
            from bmsgate.app.live_view import LiveView  # noqa: PLC0415 - rich loads with the live view only

            self._view = LiveView(names=self.names, link_stats=self.link_stats, notices=self.notices)
        return self._view

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
        out = self._plain_stream()
        out.write(line + "\n")
        out.flush()
        self.lines_written += 1

    def _plain_stream(self) -> IO[str]:
        if self.stream is not None:
            return self.stream
        if self.console is not None:
            return self.console.file
        return sys.stdout

"""The fleet overview as a read model: every gateway's summary, kept current by the live stream.

Reading every gateway from the store costs seconds at 10,000 sites (the records carry every battery's
snapshot), far too slow for a page that should show its rows at once. The overview only needs each site's
summary, so the API keeps them: read in full once (and again when older than ``max_age_s``, in case a change
reached the store without reaching the live feed, in the background while the old ones are served), and
refreshed one gateway at a time when the live stream reads a changed gateway anyway. The first read happens
at start-up; only a request arriving before it finished waits for it.

Each summary is kept as an :class:`~.fleet_query.OverviewEntry` (its search text, state and map position
prepared once), so the paged, searched list and the map clusters of :mod:`.fleet_query` and
:mod:`.map_clusters` cost one pass over them per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bmsgate.fleet.server.api.fleet_query import OverviewEntry, entry_of
from bmsgate.fleet.server.api.views import GatewayView, gateway_view
from bmsgate.fleet.server.store.repository import GatewayRecord, Repository, StoreError

__all__ = ["OverviewCache"]

_log = logging.getLogger(__name__)


class OverviewCache:
    """Summaries of every gateway, by id."""

    def __init__(
        self, store: Repository, *, max_age_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._max_age_s = max_age_s
        self._clock = clock
        self._entries: dict[str, OverviewEntry] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self.full_reads = 0
        """How often every gateway was read from the store (for tests and figures)."""

    @property
    def loaded(self) -> bool:
        """Whether a full read happened (before it, updates are not kept: the next read has them)."""
        return self._loaded_at is not None

    async def summaries(self) -> list[GatewayView]:
        """Every gateway's summary, sorted by id.

        The first call reads the store (concurrent callers share that read); later, when the summaries
        are older than ``max_age_s``, they are answered as they are while a re-read runs in the background.

        Raises:
            StoreError: the first read failed.
        """
        return [entry.view for entry in await self.entries(ordered=True)]

    async def entries(self, *, ordered: bool = False) -> list[OverviewEntry]:
        """Every gateway's prepared summary (sorted by id when `ordered`), read as :meth:`summaries` says.

        Raises:
            StoreError: the first read failed.
        """
        if not self.loaded:
            async with self._lock:
                if not self.loaded:
                    await self._read_all()
        elif self._stale() and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._refresh_quietly(), name="bmsgate-overview-refresh")
        if ordered:
            return [self._entries[gateway_id] for gateway_id in sorted(self._entries)]
        return list(self._entries.values())

    async def _read_all(self) -> None:
        records = await self._store.list_gateways()
        self._entries = {record.id: entry_of(gateway_view(record, summary=True)) for record in records}
        self._loaded_at = self._clock()
        self.full_reads += 1

    async def _refresh_quietly(self) -> None:
        async with self._lock:
            try:
                await self._read_all()
            except StoreError as exc:
                # The summaries stay as they were; the next request tries again.
                _log.warning("overview: re-reading the gateways failed: %s", exc)

    async def warm(self) -> None:
        """Read the summaries now (at start-up), so that the first page is not the one waiting."""
        try:
            await self.summaries()
        except StoreError as exc:
            _log.warning("overview: first read failed (retried on the first request): %s", exc)

    async def close(self) -> None:
        """Stop a background re-read."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh

    def _stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at > self._max_age_s

    def update(self, record: GatewayRecord) -> GatewayView:
        """Keep a freshly read gateway; returns its summary."""
        view = gateway_view(record, summary=True)
        if self.loaded:
            self._entries[record.id] = entry_of(view)
        return view

    def remove(self, gateway_id: str) -> None:
        """Forget a deleted gateway."""
        self._entries.pop(gateway_id, None)

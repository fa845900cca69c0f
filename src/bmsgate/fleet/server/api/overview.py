"""The fleet overview as a read model: every gateway's summary, kept current by the live stream.

Reading every gateway from the store costs seconds at 10,000 sites (the records carry every battery's
snapshot), far too slow for a page that should show its rows at once. The overview only needs each site's
summary, so the API keeps them: read in full once (and again when older than ``max_age_s``, in case a change
reached the store without reaching the live feed), and refreshed one gateway at a time when the live stream
reads a changed gateway anyway. A request never waits for more than one full read, shared by all requests
that arrive meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bmsgate.fleet.server.api.views import GatewayView, gateway_view
from bmsgate.fleet.server.store.repository import GatewayRecord, Repository

__all__ = ["OverviewCache"]


class OverviewCache:
    """Summaries of every gateway, by id."""

    def __init__(
        self, store: Repository, *, max_age_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._max_age_s = max_age_s
        self._clock = clock
        self._views: dict[str, GatewayView] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()
        self.full_reads = 0
        """How often every gateway was read from the store (for tests and figures)."""

    @property
    def loaded(self) -> bool:
        """Whether a full read happened (before it, updates are not kept: the next read has them)."""
        return self._loaded_at is not None

    async def summaries(self) -> list[GatewayView]:
        """Every gateway's summary, sorted by id (reads the store when never read or too old).

        Raises:
            StoreError: the store could not be read.
        """
        if self._stale():
            async with self._lock:
                if self._stale():
                    records = await self._store.list_gateways()
                    self._views = {record.id: gateway_view(record, summary=True) for record in records}
                    self._loaded_at = self._clock()
                    self.full_reads += 1
        return [self._views[gateway_id] for gateway_id in sorted(self._views)]

    def _stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at > self._max_age_s

    def update(self, record: GatewayRecord) -> GatewayView:
        """Keep a freshly read gateway; returns its summary."""
        view = gateway_view(record, summary=True)
        if self.loaded:
            self._views[record.id] = view
        return view

    def remove(self, gateway_id: str) -> None:
        """Forget a deleted gateway."""
        self._views.pop(gateway_id, None)

"""The fleet overview as a read model: every gateway's summary, kept current by the live stream.

Reading every gateway from the store costs seconds at 10,000 sites (the records carry every battery's
snapshot), far too slow for a page that should show its rows at once. The overview only needs each site's
summary, so the API keeps them: read in full once (and again when older than ``max_age_s``, in case a change
reached the store without reaching the live feed, in the background while the old ones are served), and
refreshed one gateway at a time when the live stream reads a changed gateway anyway. The first read happens
at start-up; only a request arriving before it finished waits for it.

Each summary is kept as an :class:`~.fleet_query.OverviewEntry` (its search text, state and map position
prepared once), so the paged, searched list and the map clusters of :mod:`.fleet_query` and
:mod:`.map_clusters` cost one pass over them per request. At 50,000 gateways even one sort per request
(~0.2 s here) is too much while live updates change some summary every millisecond: the order per sort key
and the fleet counts are kept and recomputed when something changed; once the fleet is larger than
``exact_below``, at most every ``derived_max_age_s`` or 10 times what the last computation took (~3 s at
50,000), in a thread while requests get the kept value (a page shows current rows in an order that old).

A full read costs ~0.25 ms per gateway (seconds at 50,000), so re-reads are spaced by at least 20 times
the last one's duration (≤ 5 % of a core), and the summaries are built off the event loop. The reads are
the store's summary form (:meth:`~.repository.Repository.list_gateway_summaries`: SoC and cell delta
extracted by the database, no snapshot decoded here).

Telemetry, most of the live traffic (5,000 messages/s at 50,000 gateways), changes only a summary's SoC,
cell delta and last-seen time: :meth:`OverviewCache.apply_telemetry` updates the entry in place from what
ingest put on the live feed (each entry keeps its batteries' values), without reading the store. Whatever
it cannot apply exactly as the store keeps it (a battery it does not know, a backfilled message, a value
that is not a finite number, no receive time) is left to a store read; a battery's reading older than the one
kept is left out, as the store's upsert leaves it out, and the periodic full re-read
replaces every entry with the store's version anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final, TypeVar, cast

from bmsgate.fleet.server.api.fleet_query import (
    BatteryValues,
    FleetCounts,
    OverviewEntry,
    PageQuery,
    SearchIndex,
    SortKey,
    entry_of,
    fleet_counts,
    ordered_by,
)
from bmsgate.fleet.server.api.views import GatewayView, gateway_view
from bmsgate.fleet.server.store.repository import GatewayRecord, Repository, StoreError

__all__ = ["OverviewCache"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_DERIVED_KEPT: Final = 256
_REREAD_SPACING: Final = 20.0
_DERIVED_SPACING: Final = 10.0
"""In a large fleet a derived value is recomputed at most every 10 times its last computation's duration."""
_IN_A_THREAD: Final = 50
"""More gateways than this changed at once: their summaries are built in a thread."""
"""A re-read waits at least this many times the last full read's duration."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Derived:
    revision: int
    computed_at: float
    cost_s: float
    value: Any


def _prepared(records: Sequence[GatewayRecord]) -> dict[str, OverviewEntry]:
    return {record.id: entry_of(gateway_view(record, summary=True), _battery_values(record)) for record in records}


def _kept_newer(kept: OverviewEntry | None, fresh: OverviewEntry) -> OverviewEntry:
    """`fresh` (from a store read), with any battery reading `kept` holds that is newer than the read's.

    A read that began before a newer reading was committed and applied in place (`apply_telemetry`) must not
    undo it: per battery the newer reading wins, as in the store, and the last-seen time never goes back.
    """
    if kept is None or not kept.batteries:
        return fresh
    newer = {battery: (soc, delta, at) for battery, soc, delta, at in kept.batteries if at is not None}
    merged: list[BatteryValues] = []
    changed = False
    for battery, soc, delta, at in fresh.batteries:
        held = newer.get(battery)
        if held is not None and (at is None or held[2] > at):
            merged.append((battery, *held))
            changed = True
        else:
            merged.append((battery, soc, delta, at))
    if not changed:
        return fresh
    socs = [soc for _, soc, _, _ in merged if soc is not None]
    deltas = [delta for _, _, delta, _ in merged if delta is not None]
    last_seen = max((seen for seen in (kept.view.last_seen, fresh.view.last_seen) if seen is not None), default=None)
    view = dataclasses.replace(
        fresh.view,
        soc=sum(socs) / len(socs) if socs else None,
        cell_delta=max(deltas) if deltas else None,
        last_seen=last_seen,
    )
    return dataclasses.replace(fresh, view=view, batteries=tuple(merged))


def _battery_values(record: GatewayRecord) -> tuple[BatteryValues, ...]:
    return tuple(
        (battery.id, _number(battery.snapshot.get("soc")), _number(battery.snapshot.get("cell_delta")), battery.at)
        for battery in record.batteries
        if battery.snapshot is not None
    )


def _number(value: object) -> float | None:
    """A snapshot's number as the summary counts it (None: absent or not a number)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _finite(value: object) -> float | None:
    """`value` as a float when it is a finite number (None: anything else)."""
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


class _NotApplicable(Exception):
    pass


def _reading_values(reading: object) -> tuple[float | None, float | None] | None:
    """A live reading's (soc, cell_delta); None: no snapshot (the store keeps the battery's previous one).

    Raises:
        _NotApplicable: a value the store would refuse or that is not what it keeps.
    """
    if not isinstance(reading, Mapping):
        raise _NotApplicable
    snapshot = reading.get("snapshot")
    if snapshot is None:
        return None
    if not isinstance(snapshot, Mapping):
        raise _NotApplicable
    numbers: list[float | None] = []
    for value in (snapshot.get("soc"), snapshot.get("cell_delta")):
        number = _number(value)
        if value is not None and (number is None or not math.isfinite(number)):
            raise _NotApplicable
        numbers.append(number)
    return numbers[0], numbers[1]


class OverviewCache:
    """Summaries of every gateway, by id."""

    def __init__(
        self,
        store: Repository,
        *,
        max_age_s: float = 60.0,
        derived_max_age_s: float = 1.0,
        exact_below: int = 5000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max_age_s = max_age_s
        self._derived_max_age_s = derived_max_age_s
        self._exact_below = exact_below
        self._clock = clock
        self._entries: dict[str, OverviewEntry] = {}
        self._loaded_at: float | None = None
        self._read_s = 0.0
        self._revision = 0
        self._derived: dict[Hashable, _Derived] = {}
        self._computing: dict[Hashable, asyncio.Task[Any]] = {}
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

    async def ordered(self, key: SortKey, *, descending: bool = False) -> list[OverviewEntry]:
        """Every gateway's current summary in the order of `key` (see the module docstring for its age).

        Raises:
            StoreError: the first read failed.
        """
        index = await self._index(key, descending=descending)
        current = self._entries
        return [current[gateway_id] for gateway_id in index.ids if gateway_id in current]

    async def page(self, query: PageQuery) -> tuple[list[OverviewEntry], int]:
        """One page of the gateways matching `query`, and how many match in all.

        Raises:
            StoreError: the first read failed.
        """
        index = await self._index(query.sort, descending=query.descending)
        current = self._entries
        end = query.offset + query.limit
        if not query.words and query.state is None:
            rows = [current[gateway_id] for gateway_id in index.ids[query.offset : end] if gateway_id in current]
            return rows, len(index.ids)
        ids = index.ids
        candidates = (current.get(ids[position]) for position in index.positions(query.words))
        matches = [entry for entry in candidates if entry is not None and query.state in (None, entry.state)]
        return matches[query.offset : end], len(matches)

    async def _index(self, key: SortKey, *, descending: bool) -> SearchIndex:
        return await self.derived(
            ("order", key, descending),
            lambda entries: SearchIndex.of(ordered_by(entries, key, descending=descending)),
        )

    async def counts(self) -> FleetCounts:
        """The fleet's counts (as old as :meth:`ordered`'s order at most).

        Raises:
            StoreError: the first read failed.
        """
        return await self.derived(("counts",), fleet_counts)

    async def derived(self, key: Hashable, compute: Callable[[list[OverviewEntry]], _T]) -> _T:
        """A value computed from every entry, kept under `key` and recomputed as the module docstring says.

        In a large fleet a value that is too old is answered as it is while it is recomputed in a thread
        (one at a time per key), so no request waits for a re-sort of 50,000 gateways; how old it may get
        grows with what it costs (at least ``derived_max_age_s``, at least 10 times its last computation).
        At most ``_DERIVED_KEPT`` values are kept (the oldest goes first): keys may come from requests.

        Raises:
            StoreError: the first read failed.
        """
        entries = await self.entries()
        kept = self._derived.get(key)
        if kept is not None:
            if self._still_good(kept):
                return cast("_T", kept.value)
            if len(self._entries) >= self._exact_below:
                if key not in self._computing:
                    task = asyncio.create_task(self._compute(key, compute, entries), name="bmsgate-overview-derived")
                    self._computing[key] = task
                    task.add_done_callback(lambda _: self._computing.pop(key, None))
                return cast("_T", kept.value)
        return await self._compute(key, compute, entries)

    async def _compute(
        self, key: Hashable, compute: Callable[[list[OverviewEntry]], _T], entries: list[OverviewEntry]
    ) -> _T:
        revision, started = self._revision, self._clock()
        if len(entries) >= self._exact_below:
            value = await asyncio.to_thread(compute, entries)
        else:
            value = compute(entries)
        self._derived.pop(key, None)
        self._derived[key] = _Derived(revision, self._clock(), self._clock() - started, value)
        while len(self._derived) > _DERIVED_KEPT:
            del self._derived[next(iter(self._derived))]
        return value

    def _still_good(self, kept: _Derived) -> bool:
        if kept.revision == self._revision:
            return True
        if len(self._entries) < self._exact_below:
            return False
        allowed = max(self._derived_max_age_s, _DERIVED_SPACING * kept.cost_s)
        return self._clock() - kept.computed_at < allowed

    async def _read_all(self) -> None:
        started = self._clock()
        records = await self._store.list_gateway_summaries()  # the overview's values only, not whole snapshots
        # ~50 us a gateway: in a thread, so that requests are still answered meanwhile.
        self._entries = await asyncio.to_thread(_prepared, records)
        self._loaded_at = self._clock()
        self._read_s = self._loaded_at - started
        self._revision += 1
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
        """Stop a background re-read and recomputations."""
        for task in list(self._computing.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh

    def _stale(self) -> bool:
        if self._loaded_at is None:
            return True
        return self._clock() - self._loaded_at > max(self._max_age_s, _REREAD_SPACING * self._read_s)

    async def update_many(self, records: Sequence[GatewayRecord]) -> list[GatewayView]:
        """Keep freshly read gateways; returns their summaries (built in a thread when many)."""
        if len(records) > _IN_A_THREAD:
            prepared = await asyncio.to_thread(_prepared, records)
        else:
            prepared = _prepared(records)
        if self.loaded:
            entries = self._entries
            for gateway_id, entry in prepared.items():
                prepared[gateway_id] = entries[gateway_id] = _kept_newer(entries.get(gateway_id), entry)
            self._revision += 1
        return [entry.view for entry in prepared.values()]

    def apply_telemetry(self, gateway_id: str, data: Mapping[str, Any]) -> bool:
        """Update a gateway's summary from a stored telemetry message's live data; False: read the store.

        `data` is what ingest publishes for telemetry (``batteries`` by id with their ``snapshot``,
        ``backfill``, ``received``: the server's receive time, which is the store's last-seen time).
        """
        entry = self._entries.get(gateway_id) if self.loaded else None
        received = _finite(data.get("received"))
        at = _finite(data.get("at"))
        readings = data.get("batteries")
        if entry is None or data.get("backfill") is not False or not isinstance(readings, Mapping):
            return False
        if received is None or at is None:
            return False
        values = {battery: (soc, delta, kept_at) for battery, soc, delta, kept_at in entry.batteries}
        try:
            for battery, reading in readings.items():
                if battery not in values:
                    return False  # a battery this entry does not know yet: the store has it all
                read = _reading_values(reading)
                soc, delta, kept_at = values[battery]
                if kept_at is not None and at < kept_at:
                    continue  # older than the reading kept: the store's upsert leaves it out, too
                values[battery] = (soc, delta, at) if read is None else (*read, at)
        except _NotApplicable:
            return False
        socs = [soc for soc, _, _ in values.values() if soc is not None]
        deltas = [delta for _, delta, _ in values.values() if delta is not None]
        view = dataclasses.replace(
            entry.view,
            soc=sum(socs) / len(socs) if socs else None,
            cell_delta=max(deltas) if deltas else None,
            last_seen=max(entry.view.last_seen or 0.0, received),
        )
        batteries = tuple((battery, soc, delta, kept_at) for battery, (soc, delta, kept_at) in values.items())
        self._entries[gateway_id] = dataclasses.replace(entry, view=view, batteries=batteries)
        self._revision += 1
        return True

    def view(self, gateway_id: str) -> GatewayView | None:
        """A gateway's summary as kept now (None: not kept)."""
        entry = self._entries.get(gateway_id)
        return None if entry is None else entry.view

    def update(self, record: GatewayRecord) -> GatewayView:
        """Keep a freshly read gateway; returns its summary."""
        view = gateway_view(record, summary=True)
        if self.loaded:
            entry = _kept_newer(self._entries.get(record.id), entry_of(view, _battery_values(record)))
            self._entries[record.id] = entry
            self._revision += 1
            view = entry.view
        return view

    def remove(self, gateway_id: str) -> None:
        """Forget a deleted gateway."""
        if self._entries.pop(gateway_id, None) is not None:
            self._revision += 1

"""Paging, sorting, searching and counting the fleet overview on the server (pure: no I/O, no framework).

At 50,000 gateways the browser cannot take every summary (tens of MB of JSON, seconds to parse), so the
overview asks for one page: the gateways matching a search and a state, in an order, ``limit`` from
``offset``. Each gateway's summary is prepared once when it changes (:func:`entry_of`: its search text,
its state, its map position), so a request is one pass over the prepared entries plus a sort of the matches
(~30 ms for 50,000 here), with no store query.

Search: every word must occur in the gateway's id, name, site, tags, software version or pack names
(case-insensitive substring), as the dashboard searched before.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import enum
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from bmsgate.fleet.server.api.views import GatewayView

__all__ = [
    "MAX_PAGE",
    "BatteryValues",
    "MAX_SEARCH_CHARS",
    "FleetCounts",
    "MapPosition",
    "OverviewEntry",
    "PageQuery",
    "SearchIndex",
    "SiteState",
    "SortKey",
    "entry_of",
    "fleet_counts",
    "matching",
    "ordered_by",
    "page_of",
    "search_words",
]

MAX_PAGE: Final = 500
"""The most gateways one page holds."""
MAX_SEARCH_CHARS: Final = 200
"""A longer search text is refused (a search is a few words; this bounds the work per request)."""
_MAX_WORDS: Final = 10
_MAX_LATITUDE: Final = 85.05112878  # where Web Mercator ends


class SiteState(enum.StrEnum):
    """A site's state as the dashboard colours it: open alarms first, then offline, then online."""

    ALARM = "alarm"
    OFFLINE = "offline"
    ONLINE = "online"


_STATE_RANK: Final = {SiteState.ALARM: 0, SiteState.OFFLINE: 1, SiteState.ONLINE: 2}


class SortKey(enum.StrEnum):
    """What the overview is sorted by; ``state`` is the default (alarms, most first; offline; lowest SoC)."""

    STATE = "state"
    NAME = "name"
    ID = "id"
    SOC = "soc"
    CELL_DELTA = "cell_delta"
    LAST_SEEN = "last_seen"
    SOFTWARE = "software"


@dataclasses.dataclass(frozen=True, slots=True)
class MapPosition:
    """Where a site is, in degrees and on the Web Mercator plane.

    ``x`` is in [0, 1) eastwards from the antimeridian, ``y`` in [0, 1] southwards from the north.
    """

    lat: float
    lon: float
    """In [-180, 180)."""
    x: float
    y: float


BatteryValues = tuple[str, float | None, float | None, float | None]
"""``(battery id, soc, cell_delta)``."""


@dataclasses.dataclass(frozen=True, slots=True)
class OverviewEntry:
    """One gateway's summary with what searching, sorting and the map need, computed once."""

    view: GatewayView
    label: str
    """Name, or id when it has none (what the list shows and sorts by)."""
    haystack: str
    """Lower-case text a search word must occur in."""
    state: SiteState
    position: MapPosition | None
    """None: no (finite) position reported."""
    batteries: tuple[BatteryValues, ...] = ()
    """The overview's values of each battery with a snapshot (what a live reading updates in place)."""


def _position(lat: float | None, lon: float | None) -> MapPosition | None:
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    clamped = max(-_MAX_LATITUDE, min(_MAX_LATITUDE, lat))
    sine = math.sin(math.radians(clamped))
    x = ((lon + 180.0) / 360.0) % 1.0
    y = 0.5 - math.log((1 + sine) / (1 - sine)) / (4 * math.pi)
    return MapPosition(lat, (lon + 180.0) % 360.0 - 180.0, x, y)


def site_state(view: GatewayView) -> SiteState:
    """The state a site is shown in."""
    if view.open_alarms > 0:
        return SiteState.ALARM
    return SiteState.ONLINE if view.online else SiteState.OFFLINE


def entry_of(view: GatewayView, batteries: tuple[BatteryValues, ...] = ()) -> OverviewEntry:
    """Prepare a gateway's summary (and its batteries' values) for searching, sorting and the map."""
    packs = " ".join(f"{pack.name} {pack.version or ''}" for pack in view.packs)
    haystack = " ".join(
        part for part in (view.id, view.name, view.site, " ".join(view.tags), view.software_version, packs) if part
    ).lower()
    # A line break separates the entries of a SearchIndex: none may occur inside one.
    haystack = haystack.replace("\n", " ").replace("\r", " ")
    location = view.location
    position = None if location is None else _position(location.lat, location.lon)
    return OverviewEntry(view, view.name or view.id, haystack, site_state(view), position, batteries)


def search_words(text: str) -> tuple[str, ...]:
    """The lower-case words of a search (at most ten; duplicates once).

    Raises:
        ValueError: the text is longer than :data:`MAX_SEARCH_CHARS`.
    """
    if len(text) > MAX_SEARCH_CHARS:
        raise ValueError(f"a search is at most {MAX_SEARCH_CHARS} characters, not {len(text)}")
    return tuple(dict.fromkeys(text.lower().split()))[:_MAX_WORDS]


def matching(
    entries: Iterable[OverviewEntry], words: Sequence[str] = (), state: SiteState | None = None
) -> list[OverviewEntry]:
    """The entries whose text holds every word and whose state is `state` (None: any)."""
    return [
        entry
        for entry in entries
        if (state is None or entry.state is state) and all(word in entry.haystack for word in words)
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class PageQuery:
    """Which page of the overview: search words, state, order and the slice."""

    words: tuple[str, ...] = ()
    state: SiteState | None = None
    sort: SortKey = SortKey.STATE
    descending: bool = False
    offset: int = 0
    limit: int = 100


@dataclasses.dataclass(frozen=True, slots=True)
class SearchIndex:
    """Gateway ids in one order, with their search texts joined into one string for fast substring search.

    ``str.find`` over the joined text runs in C: finding a word among 50,000 sites costs a few ms plus a
    little per match, where testing each site's text in Python costs ~20 ms a word.
    """

    ids: list[str]
    text: str
    starts: list[int]
    """Where each id's text starts in ``text`` (one more at the end: the length + 1)."""

    @classmethod
    def of(cls, entries: Sequence[OverviewEntry]) -> SearchIndex:
        """The index of `entries`, in their order."""
        starts = [0]
        for entry in entries:
            starts.append(starts[-1] + len(entry.haystack) + 1)
        return cls([entry.view.id for entry in entries], "\n".join(entry.haystack for entry in entries), starts)

    def positions(self, words: Sequence[str]) -> list[int]:
        """The positions (ascending: in the index's order) of the ids whose text holds every word."""
        if not words or not self.ids:
            return list(range(len(self.ids)))
        first, *others = sorted(words, key=len, reverse=True)  # a longer word is usually the rarer one
        found = []
        text, starts = self.text, self.starts
        at = text.find(first)
        while at >= 0:
            position = bisect.bisect_right(starts, at) - 1
            found.append(position)
            at = text.find(first, starts[position + 1])
        if others:
            found = [p for p in found if all(word in text[starts[p] : starts[p + 1] - 1] for word in others)]
        return found


def _missing_last(value: float | None, *, descending: bool) -> tuple[int, float]:
    if value is None:
        return (1, 0.0)
    return (0, -value if descending else value)


def _sort_function(key: SortKey, descending: bool) -> Callable[[OverviewEntry], Any]:
    if key is SortKey.STATE:
        return lambda e: (
            _STATE_RANK[e.state],
            -e.view.open_alarms,
            _missing_last(e.view.soc, descending=False),
            e.label,
            e.view.id,
        )
    if key is SortKey.NAME:
        return lambda e: (e.label.lower(), e.view.id)
    if key is SortKey.ID:
        return lambda e: e.view.id
    if key is SortKey.SOFTWARE:
        return lambda e: (e.view.software_version is None, e.view.software_version or "", e.view.id)
    numbers: dict[SortKey, Callable[[GatewayView], float | None]] = {
        SortKey.SOC: lambda view: view.soc,
        SortKey.CELL_DELTA: lambda view: view.cell_delta,
        SortKey.LAST_SEEN: lambda view: view.last_seen,
    }
    number = numbers[key]
    # Gateways without the value go last in either direction; descending is done on the value, not by
    # reversing, so that ties keep their id order both ways.
    return lambda e: (_missing_last(number(e.view), descending=descending), e.view.id)


def ordered_by(entries: Iterable[OverviewEntry], key: SortKey, *, descending: bool = False) -> list[OverviewEntry]:
    """The entries in the order asked for (numbers: missing values last either way; text: reversed whole)."""
    order = _sort_function(key, descending)
    numeric = key in (SortKey.SOC, SortKey.CELL_DELTA, SortKey.LAST_SEEN)
    return sorted(entries, key=order, reverse=descending and not numeric)


def page_of(
    matches: Iterable[OverviewEntry], key: SortKey, *, descending: bool = False, offset: int = 0, limit: int = 100
) -> list[OverviewEntry]:
    """One page of the matches in the order asked for."""
    return ordered_by(matches, key, descending=descending)[offset : offset + limit]


@dataclasses.dataclass(frozen=True, slots=True)
class FleetCounts:
    """Counts over the whole fleet (whatever a page shows)."""

    total: int
    online: int
    offline: int
    with_alarms: int
    """Gateways with at least one alarm not closed."""
    open_alarms: int
    """Alarms not closed (open or acknowledged), summed over the gateways."""
    located: int
    """Gateways with a position (what the map can show)."""
    versions: dict[str, int]
    """Gateways per software version (``unknown`` for none), most first."""


def fleet_counts(entries: Iterable[OverviewEntry]) -> FleetCounts:
    """Count the fleet in one pass."""
    total = online = with_alarms = open_alarms = located = 0
    versions: collections.Counter[str] = collections.Counter()
    for entry in entries:
        view = entry.view
        total += 1
        online += view.online
        if view.open_alarms:
            with_alarms += 1
            open_alarms += view.open_alarms
        located += entry.position is not None
        versions[view.software_version or "unknown"] += 1
    return FleetCounts(
        total=total,
        online=online,
        offline=total - online,
        with_alarms=with_alarms,
        open_alarms=open_alarms,
        located=located,
        versions=dict(versions.most_common()),
    )

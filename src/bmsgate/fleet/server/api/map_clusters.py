"""The map's markers at any fleet size: single sites when few are in view, else a grid of clusters (pure).

The browser asks for the area it shows and its zoom level. When at most ``max_points`` located sites fall
in that area, each comes as itself (id, name, state, position), so a small fleet looks as it always did.
Beyond, the sites are counted in square cells of the Web Mercator plane, ``cell_px`` screen pixels wide
at that zoom (256-pixel tiles, as Leaflet and every tile server use): one cluster per non-empty cell, at
the mean position of its sites, with how many are in alarm, offline and online; neighbouring cells whose
sites' centres are closer than 3/4 of a cell are merged (a town straddling a grid line is one cluster,
not four overlapping ones). A cell holding one site is that site. So the answer has at most as many
entries as cells fit on the screen, whatever the fleet size, and the work is one pass over the prepared
positions (:class:`~.fleet_query.MapPosition`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Final

from bmsgate.fleet.server.api.fleet_query import MapPosition, OverviewEntry, SiteState

__all__ = ["MAX_ZOOM", "Bounds", "MapAnswer", "MapCluster", "MapSite", "clusters_in"]

MAX_ZOOM: Final = 22
_TILE_PX: Final = 256
_MERGE_DISTANCE: Final = 0.75
"""Neighbouring clusters closer than this many cells (centre of mass to centre of mass) become one."""
_MERGE_AT_MOST: Final = 5000
"""More non-empty cells than this (a very wide view at a close zoom): no merging, the grid as it is."""


@dataclasses.dataclass(frozen=True, slots=True)
class Bounds:
    """The area shown, in degrees (``west`` > ``east`` crosses the antimeridian)."""

    south: float
    west: float
    north: float
    east: float

    def __post_init__(self) -> None:
        """Refuse what is not an area.

        Raises:
            ValueError: a coordinate is not finite or out of range, or ``south > north``.
        """
        for name in ("south", "west", "north", "east"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number of degrees")
        if not (-90 <= self.south <= self.north <= 90):
            raise ValueError("latitudes must satisfy -90 <= south <= north <= 90")
        if not (-540 <= self.west <= 540 and -540 <= self.east <= 540):
            raise ValueError("longitudes must be within -540..540 degrees")

    def longitude_range(self) -> tuple[float, float, bool, bool]:
        """The longitudes inside: ``(west, east, wraps, everything)``.

        The edges are brought into [-180, 180); ``wraps``: the area crosses the antimeridian (a longitude is
        inside when ≥ west or ≤ east); ``everything``: it spans every longitude.
        """
        if self.east - self.west >= 360:
            return -180.0, 180.0, False, True
        west = (self.west + 180) % 360 - 180
        east = (self.east + 180) % 360 - 180
        return west, east, east < west, False


@dataclasses.dataclass(frozen=True, slots=True)
class MapSite:
    """One site drawn as itself."""

    id: str
    name: str
    state: str
    lat: float
    lon: float


@dataclasses.dataclass(frozen=True, slots=True)
class MapCluster:
    """Several sites in one grid cell, drawn as one marker with their count."""

    lat: float
    lon: float
    count: int
    alarm: int
    offline: int
    online: int


@dataclasses.dataclass(frozen=True, slots=True)
class MapAnswer:
    """What the map draws for one view."""

    zoom: int
    clustered: bool
    """False: every site in view is in ``sites``; True: cells with several sites are ``clusters``."""
    in_view: int
    """Located sites in the area (in either form)."""
    extent: tuple[float, float, float, float] | None
    """``(south, west, north, east)`` of those sites (None: none): where a map shows them all."""
    sites: list[MapSite]
    clusters: list[MapCluster]


@dataclasses.dataclass(slots=True)
class _Cell:
    lat_sum: float = 0.0
    lon_sum: float = 0.0
    x_sum: float = 0.0
    y_sum: float = 0.0
    counts: dict[SiteState, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SiteState, 0))
    first: tuple[OverviewEntry, MapPosition] | None = None


def _count(cell: _Cell) -> int:
    return sum(cell.counts.values())


def _merge_close_neighbours(cells: dict[tuple[int, int], _Cell], distance: float) -> None:
    """Fold a cell into a neighbouring one when their centres of mass are closer than `distance` cells.

    A town's sites that straddle a grid line would otherwise be drawn as two or four overlapping
    clusters. The biggest cells absorb first; only the eight neighbours are looked at.
    """
    limit = distance * distance
    for key in sorted(cells, key=lambda key: -_count(cells[key])):
        cell = cells.get(key)
        if cell is None:
            continue
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                other_key = (key[0] + dx, key[1] + dy)
                other = cells.get(other_key) if other_key != key else None
                if other is None:
                    continue
                count, other_count = _count(cell), _count(other)
                gap_x = cell.x_sum / count - other.x_sum / other_count
                gap_y = cell.y_sum / count - other.y_sum / other_count
                if gap_x * gap_x + gap_y * gap_y < limit:
                    cell.lat_sum += other.lat_sum
                    cell.lon_sum += other.lon_sum
                    cell.x_sum += other.x_sum
                    cell.y_sum += other.y_sum
                    for state, number in other.counts.items():
                        cell.counts[state] += number
                    del cells[other_key]


def _site(entry: OverviewEntry, position: MapPosition) -> MapSite:
    return MapSite(entry.view.id, entry.label, entry.state.value, position.lat, position.lon)


def clusters_in(
    entries: Iterable[OverviewEntry], bounds: Bounds, zoom: int, *, max_points: int = 1500, cell_px: int = 64
) -> MapAnswer:
    """The markers for the area `bounds` at `zoom` (see the module docstring).

    Raises:
        ValueError: `zoom` outside 0..:data:`MAX_ZOOM` or a `cell_px` below 8.
    """
    if not 0 <= zoom <= MAX_ZOOM:
        raise ValueError(f"zoom must be within 0..{MAX_ZOOM}")
    if cell_px < 8:
        raise ValueError("cell_px must be at least 8")
    south, north = bounds.south, bounds.north
    west, east, wraps, every_longitude = bounds.longitude_range()
    # One comprehension, no call per site: this pass is most of the time of a map answer at 50,000 sites.
    inside = [
        (entry, position)
        for entry in entries
        if (position := entry.position) is not None
        and south <= position.lat <= north
        and (
            every_longitude or (position.lon >= west or position.lon <= east if wraps else west <= position.lon <= east)
        )
    ]
    extent = None
    if inside:
        lats = [position.lat for _, position in inside]
        lons = [position.lon for _, position in inside]
        extent = (min(lats), min(lons), max(lats), max(lons))
    if len(inside) <= max_points:
        every_site = [_site(entry, position) for entry, position in inside]
        return MapAnswer(zoom, False, len(inside), extent, every_site, [])
    cells_across = (_TILE_PX << zoom) / cell_px
    cells: dict[tuple[int, int], _Cell] = {}
    for entry, position in inside:
        key = (int(position.x * cells_across), int(position.y * cells_across))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell(first=(entry, position))
        cell.lat_sum += position.lat
        cell.lon_sum += position.lon
        cell.x_sum += position.x
        cell.y_sum += position.y
        cell.counts[entry.state] += 1
    if len(cells) <= _MERGE_AT_MOST:
        _merge_close_neighbours(cells, cells_across * _MERGE_DISTANCE)
    sites: list[MapSite] = []
    clusters: list[MapCluster] = []
    for cell in cells.values():
        count = sum(cell.counts.values())
        if count == 1 and cell.first is not None:
            sites.append(_site(*cell.first))
            continue
        clusters.append(
            MapCluster(
                lat=round(cell.lat_sum / count, 5),
                lon=round(cell.lon_sum / count, 5),
                count=count,
                alarm=cell.counts[SiteState.ALARM],
                offline=cell.counts[SiteState.OFFLINE],
                online=cell.counts[SiteState.ONLINE],
            )
        )
    return MapAnswer(zoom, True, len(inside), extent, sites, clusters)

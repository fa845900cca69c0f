"""The overview routes at fleet scale (``/api/v1/overview``...), registered by :func:`.app.create_app`.

* ``GET /overview``: one page of gateway summaries, searched, filtered by state and sorted on the server,
  with the counts of the whole fleet (what the dashboard's list shows);
* ``GET /overview/counts``: only the counts (the alarm badge, a status line);
* ``GET /overview/map``: the markers of one map view, clustered when many (:mod:`.map_clusters`).

All three answer from the overview read model (:class:`.overview.OverviewCache`: its kept orders, counts
and map answers), never from a store query per request; ``GET /gateways?summary=true`` (every summary at
once) stays for scripts and small fleets.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Final

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter

from bmsgate.fleet.server.api.context import ApiContext
from bmsgate.fleet.server.api.fleet_query import (
    MAX_PAGE,
    MAX_SEARCH_CHARS,
    FleetCounts,
    PageQuery,
    SiteState,
    SortKey,
    matching,
    search_words,
)
from bmsgate.fleet.server.api.map_clusters import MAX_ZOOM, Bounds, MapAnswer, clusters_in
from bmsgate.fleet.server.api.views import GatewayView

__all__ = ["OVERVIEW_HANDLERS", "OverviewPage"]


@dataclasses.dataclass(frozen=True, slots=True)
class OverviewPage:
    """One page of the overview."""

    gateways: list[GatewayView]
    matched: int
    """Gateways matching the search and state (all pages)."""
    offset: int
    limit: int
    counts: FleetCounts


def _words(search: str) -> tuple[str, ...]:
    try:
        return search_words(search)
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc


_SEARCH: Final = QueryParameter(
    name="q", max_length=MAX_SEARCH_CHARS, description="words that must all occur in id, name, site, tags, versions"
)
_STATE: Final = QueryParameter(name="state", description="alarm, offline or online (default: every state)")


@get("/overview", summary="One page of the fleet overview, searched, filtered and sorted on the server")
async def overview_page(
    ctx: NamedDependency[ApiContext],
    search: Annotated[str, _SEARCH] = "",
    wanted_state: Annotated[SiteState | None, _STATE] = None,
    sort: Annotated[SortKey, QueryParameter(description="state (default), name, id, soc, ...")] = SortKey.STATE,
    descending: Annotated[bool, QueryParameter(description="reverse the order")] = False,
    offset: Annotated[int, QueryParameter(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
) -> OverviewPage:
    """The gateways matching `q` and `state`, `limit` of them from `offset`, and the fleet's counts."""
    query = PageQuery(_words(search), wanted_state, sort, descending, offset, limit)
    rows, matched = await ctx.overview.page(query)
    return OverviewPage(
        gateways=[entry.view for entry in rows],
        matched=matched,
        offset=offset,
        limit=limit,
        counts=await ctx.overview.counts(),
    )


@get("/overview/counts", summary="Counts of the whole fleet: online, offline, alarms, versions")
async def overview_counts(ctx: NamedDependency[ApiContext]) -> FleetCounts:
    """Online, offline, with alarms, open alarms, located, and gateways per software version."""
    return await ctx.overview.counts()


@get("/overview/map", summary="The map's markers for one view: sites, or clusters when many")
async def overview_map(
    ctx: NamedDependency[ApiContext],
    zoom: Annotated[int, QueryParameter(ge=0, le=MAX_ZOOM)],
    south: Annotated[float, QueryParameter(ge=-90, le=90)] = -90.0,
    west: Annotated[float, QueryParameter(ge=-540, le=540)] = -180.0,
    north: Annotated[float, QueryParameter(ge=-90, le=90)] = 90.0,
    east: Annotated[float, QueryParameter(ge=-540, le=540)] = 180.0,
    search: Annotated[str, _SEARCH] = "",
    wanted_state: Annotated[SiteState | None, _STATE] = None,
) -> MapAnswer:
    """Every located site in the view as itself when at most ``map_max_points``, else grid clusters."""
    try:
        bounds = Bounds(south=south, west=west, north=north, east=east)
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc
    words = _words(search)
    limit = ctx.settings.map_max_points
    return await ctx.overview.derived(
        ("map", bounds, zoom, words, wanted_state),
        lambda entries: clusters_in(matching(entries, words, wanted_state), bounds, zoom, max_points=limit),
    )


OVERVIEW_HANDLERS: Final = (overview_page, overview_counts, overview_map)

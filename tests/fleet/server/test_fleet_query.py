"""Overview pages, counts and map clusters computed on the server (pure functions, no store)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.fleet.server.api.fleet_query import (
    MAX_SEARCH_CHARS,
    OverviewEntry,
    SearchIndex,
    SiteState,
    SortKey,
    entry_of,
    fleet_counts,
    matching,
    page_of,
    search_words,
)
from bmsgate.fleet.server.api.map_clusters import Bounds, clusters_in
from bmsgate.fleet.server.api.views import GatewayView, LocationView, PackView


def view(
    gateway: str,
    *,
    name: str | None = None,
    online: bool = True,
    alarms: int = 0,
    soc: float | None = 50.0,
    lat: float | None = -29.0,
    lon: float | None = 24.0,
    version: str | None = "0.1.0",
    last_seen: float | None = 1000.0,
) -> GatewayView:
    location = None if lat is None else LocationView(lat, lon, "fixed", "config", None, 0.0)
    return GatewayView(
        id=gateway,
        name=name,
        site="Durban" if gateway.endswith("1") else "Upington",
        tags=["demo"],
        hardware="pi",
        online=online,
        last_seen=last_seen,
        software_version=version,
        location=location,
        packs=[PackView("pack", "site-maps", "3", "ab" * 32)],
        open_alarms=alarms,
        worst_severity="warning" if alarms else None,
        soc=soc,
        cell_delta=None if soc is None else soc / 1000,
        interval_s=10.0,
        uptime_s=1.0,
        buffer_queued=0,
        buffer_dropped=0,
    )


def entries(*views: GatewayView) -> list[OverviewEntry]:
    return [entry_of(item) for item in views]


def ids(rows: list[OverviewEntry]) -> list[str]:
    return [row.view.id for row in rows]


def test_the_default_order_is_alarms_most_first_then_offline_then_lowest_soc() -> None:
    fleet = entries(
        view("gw-a", soc=80),
        view("gw-b", soc=20),
        view("gw-c", online=False),
        view("gw-d", alarms=1),
        view("gw-e", alarms=3, soc=None),
        view("gw-f", soc=None),
    )
    assert ids(page_of(fleet, SortKey.STATE)) == ["gw-e", "gw-d", "gw-c", "gw-b", "gw-a", "gw-f"]


@pytest.mark.parametrize("descending", [False, True])
def test_numeric_sorts_put_gateways_without_the_value_last_both_ways(descending: bool) -> None:
    fleet = entries(view("gw-a", soc=80), view("gw-b", soc=None), view("gw-c", soc=20), view("gw-d", soc=20))
    expected = ["gw-a", "gw-c", "gw-d", "gw-b"] if descending else ["gw-c", "gw-d", "gw-a", "gw-b"]
    assert ids(page_of(fleet, SortKey.SOC, descending=descending)) == expected


def test_text_sorts_and_descending() -> None:
    fleet = entries(view("gw-b", name="alpha"), view("gw-a", name="Bravo"), view("gw-c", version=None))
    assert ids(page_of(fleet, SortKey.NAME)) == ["gw-b", "gw-a", "gw-c"]
    assert ids(page_of(fleet, SortKey.ID, descending=True)) == ["gw-c", "gw-b", "gw-a"]
    assert ids(page_of(fleet, SortKey.SOFTWARE))[-1] == "gw-c"


def test_pages_cover_every_match_once_in_order() -> None:
    fleet = entries(*(view(f"gw-{index:04d}", soc=index % 97, alarms=index % 13 == 0) for index in range(1000)))
    for key in SortKey:
        whole = ids(page_of(fleet, key, limit=5000))
        paged = [
            gateway for offset in range(0, 1000, 70) for gateway in ids(page_of(fleet, key, offset=offset, limit=70))
        ]
        assert paged == whole, key
        assert len(set(paged)) == 1000
    assert page_of(fleet, SortKey.ID, offset=2000) == []


def test_search_needs_every_word_in_any_field_and_the_state_filter() -> None:
    fleet = entries(
        view("site-00001", name="Durban North"),
        view("site-00002", name="Upington A", online=False),
        view("site-00011", name="Durban South", alarms=2, version="0.2.0"),
    )
    assert ids(matching(fleet, search_words("DURBAN"))) == ["site-00001", "site-00011"]
    assert ids(matching(fleet, search_words("durban 0.2"))) == ["site-00011"]
    assert ids(matching(fleet, search_words("site-maps upington"))) == ["site-00002"]
    assert ids(matching(fleet, (), SiteState.OFFLINE)) == ["site-00002"]
    assert ids(matching(fleet, search_words("durban"), SiteState.ALARM)) == ["site-00011"]
    assert matching(fleet, search_words("zzz")) == []


def test_a_search_is_bounded() -> None:
    assert search_words("a  b a   c") == ("a", "b", "c")
    assert len(search_words(" ".join(f"w{index}" for index in range(50)))) == 10
    with pytest.raises(ValueError, match="at most"):
        search_words("x" * (MAX_SEARCH_CHARS + 1))


@given(st.text(max_size=400))
def test_search_words_only_ever_raise_value_error(text: str) -> None:
    try:
        words = search_words(text)
    except ValueError:
        assert len(text) > MAX_SEARCH_CHARS
        return
    assert all(word == word.lower() and word.strip() == word and word for word in words)


def test_counts_over_the_fleet() -> None:
    fleet = entries(
        view("gw-a"),
        view("gw-b", online=False, version=None),
        view("gw-c", alarms=2, version="0.2.0"),
        view("gw-d", alarms=1, online=False, lat=None),
    )
    counts = fleet_counts(fleet)
    assert (counts.total, counts.online, counts.offline) == (4, 2, 2)
    assert (counts.with_alarms, counts.open_alarms, counts.located) == (2, 3, 3)
    assert counts.versions == {"0.1.0": 2, "unknown": 1, "0.2.0": 1}


def test_a_position_that_is_not_finite_is_not_on_the_map() -> None:
    assert entry_of(view("gw-a", lat=math.nan)).position is None
    assert entry_of(view("gw-a", lat=-29.0, lon=None)).position is None
    polar = entry_of(view("gw-a", lat=90.0, lon=180.0)).position
    assert polar is not None
    assert 0 <= polar.x < 1
    assert polar.y == pytest.approx(0.0, abs=1e-6)


WORLD = Bounds(south=-90, west=-180, north=90, east=180)


def grid_fleet(count: int) -> list[OverviewEntry]:
    """`count` gateways spread over South Africa, every tenth with an alarm, every seventh offline."""
    return entries(
        *(
            view(
                f"gw-{index:05d}",
                lat=-34 + (index % 100) * 0.1,
                lon=18 + (index // 100 % 100) * 0.14,
                alarms=int(index % 10 == 0),
                online=index % 7 != 0,
            )
            for index in range(count)
        )
    )


def test_few_sites_come_as_themselves() -> None:
    fleet = grid_fleet(300)
    answer = clusters_in(fleet, WORLD, 5, max_points=300)
    assert not answer.clustered
    assert answer.in_view == 300
    assert sorted(site.id for site in answer.sites) == sorted(ids(fleet))
    assert answer.clusters == []
    assert {site.state for site in answer.sites} == {"alarm", "offline", "online"}


def test_many_sites_are_clustered_per_grid_cell_and_nothing_is_lost() -> None:
    fleet = grid_fleet(10_000)
    coarse = clusters_in(fleet, WORLD, 4, max_points=1000)
    fine = clusters_in(fleet, WORLD, 8, max_points=1000)
    assert coarse.clustered
    assert fine.clustered
    for answer in (coarse, fine):
        assert sum(cluster.count for cluster in answer.clusters) + len(answer.sites) == 10_000
        assert sum(c.alarm for c in answer.clusters) + sum(s.state == "alarm" for s in answer.sites) == 1000
        for cluster in answer.clusters:
            assert cluster.count == cluster.alarm + cluster.offline + cluster.online
            assert cluster.count >= 2
            assert -34.1 <= cluster.lat <= -24 and 17.9 <= cluster.lon <= 32
    # A closer zoom has smaller cells: more, smaller clusters.
    assert len(fine.clusters) > 4 * len(coarse.clusters)
    # At zoom 4 a 64-pixel cell is ~5.6 degrees wide: South Africa is a handful of cells.
    assert len(coarse.clusters) < 20


def test_only_the_area_asked_for_is_counted() -> None:
    fleet = grid_fleet(10_000)
    area = Bounds(south=-30, west=20, north=-28, east=22)
    answer = clusters_in(fleet, area, 9, max_points=10)
    inside = [
        entry
        for entry in fleet
        if entry.position is not None and -30 <= entry.position.lat <= -28 and 20 <= entry.position.lon <= 22
    ]
    assert answer.in_view == len(inside) > 100
    assert sum(cluster.count for cluster in answer.clusters) + len(answer.sites) == len(inside)


def test_an_area_across_the_antimeridian() -> None:
    fleet = entries(view("gw-fiji", lat=-17.7, lon=178.0), view("gw-samoa", lat=-13.8, lon=-172.0), view("gw-x"))
    answer = clusters_in(fleet, Bounds(south=-30, west=170, north=0, east=190), 3)
    assert sorted(site.id for site in answer.sites) == ["gw-fiji", "gw-samoa"]


@pytest.mark.parametrize(
    "edges",
    [
        {"south": 10, "west": 0, "north": 0, "east": 10},
        {"south": -100, "west": 0, "north": 0, "east": 10},
        {"south": 0, "west": math.nan, "north": 1, "east": 10},
        {"south": 0, "west": 0, "north": 1, "east": math.inf},
        {"south": 0, "west": -600, "north": 1, "east": 10},
    ],
)
def test_an_area_that_is_not_one_is_refused(edges: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Bounds(**edges)


def test_a_zoom_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="zoom"):
        clusters_in([], WORLD, 23)
    with pytest.raises(ValueError, match="cell_px"):
        clusters_in([], WORLD, 3, cell_px=2)


@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-5, max_value=30),
)
def test_any_area_and_zoom_give_an_answer_or_a_value_error(
    south: float, west: float, north: float, east: float, zoom: int
) -> None:
    fleet = grid_fleet(50)
    try:
        answer = clusters_in(fleet, Bounds(south=south, west=west, north=north, east=east), zoom, max_points=5)
    except ValueError:
        return
    assert sum(cluster.count for cluster in answer.clusters) + len(answer.sites) == answer.in_view <= 50


_NAMES = st.text(st.sampled_from("abcDurban 0.1-\n"), max_size=12)


@given(
    st.lists(_NAMES, max_size=30), st.lists(st.text(st.sampled_from("abdur0.1-"), min_size=1, max_size=3), max_size=3)
)
def test_the_search_index_finds_what_a_plain_search_finds(names: list[str], words: list[str]) -> None:
    fleet = entries(*(view(f"gw-{index:03d}", name=name or None) for index, name in enumerate(names)))
    index = SearchIndex.of(fleet)
    wanted = search_words(" ".join(words))
    assert [index.ids[position] for position in index.positions(wanted)] == ids(matching(fleet, wanted))

"""The overview routes (paged, searched list; fleet counts; map clusters) over a real store of each backend."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from bmsgate.fleet.server.live import LiveKind, LiveUpdate
from bmsgate.fleet.server.store import StoreSettings
from bmsgate.fleet.server.store.repository import NewAlarm, Severity

SITES = 400
_SETTINGS = ApiSettings(
    token_limit=RateLimit(per_minute=1e6, burst=100_000),
    anonymous_limit=RateLimit(per_minute=1e6, burst=100_000),
    map_max_points=200,
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningFleet]:
    store = None
    if request.param == "postgresql":
        store = StoreSettings(postgres_url=request.getfixturevalue("postgres_url"))
    async with running_fleet(
        tmp_path, sites=SITES, history=1, settings=_SETTINGS, templated=True, store_settings=store
    ) as running:
        yield running


async def get(fleet: RunningFleet, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.viewer}"}) as http:
        answer = await http.get(f"/api/v1{path}", params=params, timeout=30)
    answer.raise_for_status()
    return answer.json()


async def test_pages_hold_every_gateway_once_in_the_order_asked(fleet: RunningFleet) -> None:
    seen: list[str] = []
    for offset in range(0, SITES, 250):
        page = await get(fleet, "/overview", sort="id", offset=offset, limit=250)
        assert page["matched"] == SITES
        assert page["offset"] == offset
        seen += [gateway["id"] for gateway in page["gateways"]]
    assert seen == sorted(site.gateway for site in fleet.sites)
    # The default order: offline sites (no alarms yet) before online ones; summaries only.
    first = await get(fleet, "/overview", limit=5)
    assert len(first["gateways"]) == 5
    assert all(not gateway["online"] for gateway in first["gateways"])
    assert first["gateways"][0]["batteries"] is None
    lowest = await get(fleet, "/overview", sort="soc", limit=3)
    highest = await get(fleet, "/overview", sort="soc", descending="true", limit=3)
    assert lowest["gateways"][0]["soc"] <= lowest["gateways"][-1]["soc"] <= highest["gateways"][-1]["soc"]
    assert highest["gateways"][0]["soc"] >= highest["gateways"][-1]["soc"]


async def test_search_and_state_are_applied_on_the_server(fleet: RunningFleet) -> None:
    durban = {site.gateway for site in fleet.sites if site.town == "Durban"}
    page = await get(fleet, "/overview", q="DURBAN", limit=500)
    assert page["matched"] == len(durban)
    assert {gateway["id"] for gateway in page["gateways"]} == durban
    offline_durban = {site.gateway for site in fleet.sites if site.town == "Durban" and not site.online}
    page = await get(fleet, "/overview", q="durban", state="offline", limit=500)
    assert {gateway["id"] for gateway in page["gateways"]} == offline_durban
    assert (await get(fleet, "/overview", q="site-00042"))["gateways"][0]["id"] == "site-00042"
    assert (await get(fleet, "/overview", q="zzz-nothing"))["matched"] == 0
    # The counts are the whole fleet's, whatever the page.
    assert page["counts"]["total"] == SITES


async def test_counts_and_an_alarm_reaching_the_top_live(fleet: RunningFleet) -> None:
    counts = await get(fleet, "/overview/counts")
    offline = sum(not site.online for site in fleet.sites)
    assert counts["total"] == SITES
    assert (counts["online"], counts["offline"], counts["with_alarms"]) == (SITES - offline, offline, 0)
    assert sum(counts["versions"].values()) == SITES
    assert counts["versions"]["0.1.0"] == SITES // 2
    record, _ = await fleet.store.open_alarm(
        NewAlarm(
            gateway="site-00123", battery="pack1", kind="low_soc", severity=Severity.WARNING, message="", at=time.time()
        )
    )
    fleet.feed.publish(LiveUpdate(kind=LiveKind.ALARM, gateway="site-00123", at=time.time(), data={"id": record.id}))
    async with asyncio.timeout(10):
        while (await get(fleet, "/overview/counts"))["open_alarms"] != 1:
            await asyncio.sleep(0.05)
    top = await get(fleet, "/overview", limit=1)
    assert top["gateways"][0]["id"] == "site-00123"
    assert (await get(fleet, "/overview", state="alarm"))["matched"] == 1


async def test_the_map_clusters_many_sites_and_shows_few_as_themselves(fleet: RunningFleet) -> None:
    whole = await get(fleet, "/overview/map", zoom=5)
    assert whole["clustered"]
    assert whole["in_view"] == SITES
    assert sum(cluster["count"] for cluster in whole["clusters"]) + len(whole["sites"]) == SITES
    assert len(whole["clusters"]) < 60
    durban = await get(fleet, "/overview/map", zoom=9, south=-31, west=30, north=-29, east=32)
    expected = {site.gateway for site in fleet.sites if -31 <= site.lat <= -29 and 30 <= site.lon <= 32}
    assert not durban["clustered"]
    assert {site["id"] for site in durban["sites"]} == expected
    searched = await get(fleet, "/overview/map", zoom=5, q="springbok")
    assert searched["in_view"] == sum(site.town == "Springbok" for site in fleet.sites)


BAD_QUERIES = [
    "/overview?limit=0",
    "/overview?limit=501",
    "/overview?offset=-1",
    "/overview?sort=colour",
    "/overview?state=asleep",
    "/overview?q=" + "x" * 201,
    "/overview/map",
    "/overview/map?zoom=23",
    "/overview/map?zoom=3&south=10&north=0",
    "/overview/map?zoom=3&west=nan",
    "/overview/map?zoom=3&east=inf",
    "/overview/map?zoom=3&q=" + urllib.parse.quote("x" * 300),
]


async def test_bad_queries_get_a_clear_400(fleet: RunningFleet) -> None:
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.viewer}"}) as http:
        for path in BAD_QUERIES:
            answer = await http.get(f"/api/v1{path}", timeout=30)
            assert answer.status_code == 400, path
            assert answer.json()["detail"], path


async def test_the_routes_need_a_token(fleet: RunningFleet) -> None:
    async with httpx.AsyncClient(base_url=fleet.url) as http:
        for path in ("/overview", "/overview/counts", "/overview/map?zoom=3"):
            assert (await http.get(f"/api/v1{path}")).status_code == 401

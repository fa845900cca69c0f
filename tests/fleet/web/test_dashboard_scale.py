"""The dashboard with 50,000 sites in a real Chromium: a paged list, a clustered map, a bounded alarms page.

The store is seeded through the store API (``seed_fleet(templated=True)``); what is asserted is that the
pages work at that size (the server pages and clusters, the browser draws only what is in view), not how
fast: the timings are figures of ``benchmarks/fleet_dashboard.py``. One test, so the fleet is seeded once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from bmsgate.fleet.server.store.repository import NewAlarm, Repository, Severity
from tests.fleet.web.browser import GENEROUS, signed_in

SCALE = 50_000
ALARMS = 260
"""Alarms opened before the server starts (more than the alarms page's first 200)."""


async def open_alarms(store: Repository) -> None:
    now = time.time()
    for index in range(ALARMS):
        await store.open_alarm(
            NewAlarm(
                gateway=f"site-{index * 97:05d}",
                battery="pack1",
                kind="low_soc",
                severity=Severity.WARNING,
                message="SoC below 10 %",
                at=now - index,
            )
        )


async def api(fleet: RunningFleet, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.viewer}"}) as http:
        answer = await http.get(f"/api/v1{path}", params=params, timeout=60)
    answer.raise_for_status()
    return answer.json()


async def check_overview(page: Page, fleet: RunningFleet) -> None:
    await expect(page.locator("#site-count")).to_have_text(f"{SCALE} of {SCALE} sites", timeout=30_000)
    await expect(page.locator("#fleet-counts")).to_contain_text(f"{ALARMS} with alarms ({ALARMS} open)")
    rows = page.locator(".grid-row")
    assert await rows.count() < 80  # only the rows in view exist
    # The order is the server's: the sites with alarms first.
    expected_first = (await api(fleet, "/overview", limit=1))["gateways"][0]["id"]
    assert await rows.first.get_attribute("data-gateway") == expected_first
    await expect(rows.first.locator(".state")).to_have_text("1 alarm")

    # Scrolled to the end, the last page is fetched and drawn.
    last = (await api(fleet, "/overview", offset=SCALE - 1, limit=1))["gateways"][0]["id"]
    await page.evaluate("const body = document.getElementById('sites'); body.scrollTop = body.scrollHeight")
    await expect(page.locator(f".grid-row[data-gateway='{last}']")).to_be_visible(timeout=10_000)
    assert await rows.count() < 80

    # A search answered by the server; the list starts again at the top.
    matched = (await api(fleet, "/overview", q="springbok 0001"))["matched"]
    assert 0 < matched < 30
    await page.fill("#search", "springbok 0001")
    await expect(page.locator("#site-count")).to_have_text(f"{matched} of {SCALE} sites")
    await expect(rows).to_have_count(matched)
    for name in await page.locator(".grid-row .site-name").all_text_contents():
        assert name.startswith("Springbok 0001")

    # A column header sorts on the server: the highest SoC first on the second click.
    await page.fill("#search", "")
    await expect(page.locator("#site-count")).to_have_text(f"{SCALE} of {SCALE} sites")
    await page.click(".grid-head [data-sort=soc]")
    await page.click(".grid-head [data-sort=soc]")
    highest = (await api(fleet, "/overview", sort="soc", descending="true", limit=1))["gateways"][0]["id"]
    await expect(rows.first).to_have_attribute("data-gateway", highest)
    await expect(page.locator(".grid-head [data-sort=soc]")).to_have_class("sortable sorted descending")


async def check_map(page: Page) -> None:
    await page.evaluate("location.hash = '#/map'")
    await page.wait_for_selector("body[data-ready=map]", timeout=30_000)
    container = page.locator("#map")
    await expect(container).to_have_attribute("data-clustered", "true")
    assert await container.get_attribute("data-in-view") == str(SCALE)
    clusters = page.locator(".site-cluster")
    drawn = await clusters.count()
    assert 0 < drawn == int(await container.get_attribute("data-clusters") or 0) < 400
    assert await page.locator("path.site-marker").count() <= 1500
    assert await page.locator(".site-cluster.cluster-alarm").count() > 0

    # Clicking clusters zooms in until single sites show.
    for _ in range(8):
        if await container.get_attribute("data-clustered") == "false":
            break
        before = await page.evaluate("document.body.dataset.mapDrawn")
        await clusters.first.click()
        await page.wait_for_function(f"document.body.dataset.mapDrawn !== {before!r}", timeout=10_000)
    assert int(await container.get_attribute("data-in-view") or 0) < SCALE
    assert await page.locator("path.site-marker").count() > 0


async def check_alarms(page: Page) -> None:
    await page.evaluate("location.hash = '#/alarms'")
    await page.wait_for_selector("body[data-ready=alarms]", timeout=30_000)
    await expect(page.locator(".alarm-row")).to_have_count(200)
    await expect(page.locator("#alarm-count")).to_have_text("the newest 200")
    await expect(page.locator("#alarm-badge")).to_have_text(str(ALARMS))
    await page.click("#alarm-more")
    await expect(page.locator(".alarm-row")).to_have_count(ALARMS)
    await expect(page.locator("#alarm-more")).to_be_hidden()


@pytest.mark.slow
async def test_the_dashboard_pages_and_clusters_50000_sites(browser: Browser, tmp_path: Path) -> None:
    async with running_fleet(
        tmp_path, sites=SCALE, history=1, settings=GENEROUS, templated=True, before_serving=open_alarms
    ) as fleet:
        # The read model's first full read of 50,000 gateways takes seconds: the page waits 10 s at most.
        assert (await api(fleet, "/overview/counts"))["total"] == SCALE
        page = await signed_in(browser, fleet, fleet.viewer)
        await check_overview(page, fleet)
        await check_map(page)
        await check_alarms(page)

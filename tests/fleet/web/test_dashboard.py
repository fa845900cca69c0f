"""The dashboard in a real headless Chromium against a real API over a real SQLite store."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from bmsgate.fleet.server.api.sample_fleet import sample_site
from bmsgate.fleet.server.api.sample_fleet import state as sample_state
from bmsgate.fleet.server.api.sample_fleet import telemetry as sample_telemetry
from bmsgate.fleet.server.api.testing import RunningFleet
from bmsgate.fleet.server.live import LiveKind, LiveUpdate
from bmsgate.fleet.server.store.repository import Availability, IngestBatch, NewAlarm, Severity
from tests.fleet.web.browser import SITES, signed_in

_MESSAGES = {"cell_drift": ("cell 7 is 120 mV above the others", 0.12), "low_soc": ("SoC 9 % is below 10 %", 9.0)}


async def raise_alarm(fleet: RunningFleet, gateway: str, kind: str = "cell_drift", *, settle: bool = False) -> int:
    """An alarm opened the way the alarm engine does: in the store, then on the live feed.

    With `settle`, wait until the API's overview shows it (for alarms raised before a page is opened).
    """
    message, value = _MESSAGES[kind]
    record, _ = await fleet.store.open_alarm(
        NewAlarm(
            gateway=gateway,
            battery="pack1",
            kind=kind,
            severity=Severity.WARNING,
            message=message,
            at=time.time(),
            value=value,
        )
    )
    fleet.feed.publish(LiveUpdate(kind=LiveKind.ALARM, gateway=gateway, at=time.time(), data={"id": record.id}))
    if settle:
        headers = {"Authorization": f"Bearer {fleet.admin}"}
        async with httpx.AsyncClient(base_url=fleet.url, headers=headers) as http, asyncio.timeout(5):
            while True:
                listing = (await http.get("/api/v1/gateways", params={"summary": "true"})).json()
                if any(entry["id"] == gateway and entry["open_alarms"] for entry in listing["gateways"]):
                    break
                await asyncio.sleep(0.05)
    return record.id


async def open_page(page: Page, hash_route: str, ready: str) -> None:
    await page.evaluate(f"location.hash = {hash_route!r}")
    await page.wait_for_selector(f"body[data-ready={ready}]", timeout=10_000)


async def test_overview_lists_the_sites_alarms_first_and_filters(
    browser: Browser, fleet: RunningFleet, screenshots: Path
) -> None:
    await raise_alarm(fleet, "site-00003", settle=True)
    page = await signed_in(browser, fleet, fleet.viewer)
    await expect(page.locator("#site-count")).to_have_text(f"{SITES} of {SITES} sites")
    rows = page.locator(".grid-row")
    assert await rows.count() == SITES  # 30 rows fit: all drawn
    assert await rows.first.get_attribute("data-gateway") == "site-00003"
    offline = {site.gateway for site in fleet.sites if not site.online}
    second = await rows.nth(1).get_attribute("data-gateway")
    assert second in offline
    await expect(rows.first.locator(".state")).to_have_text("1 alarm")
    await page.screenshot(path=str(screenshots / "fleet-overview.png"))

    await page.fill("#search", "durban")
    durban = [site for site in fleet.sites if site.town == "Durban"]
    await expect(page.locator("#site-count")).to_have_text(f"{len(durban)} of {SITES} sites")
    assert {await row.get_attribute("data-gateway") for row in await rows.all()} == {site.gateway for site in durban}
    await page.fill("#search", "")
    await page.select_option("#state-filter", "offline")
    await expect(page.locator("#site-count")).to_have_text(f"{len(offline)} of {SITES} sites")


async def test_map_shows_a_marker_per_site(browser: Browser, fleet: RunningFleet, screenshots: Path) -> None:
    await raise_alarm(fleet, "site-00003", settle=True)
    page = await signed_in(browser, fleet, fleet.viewer)
    await open_page(page, "#/map", "map")
    await expect(page.locator("path.site-marker")).to_have_count(SITES)
    assert await page.locator("#map").get_attribute("data-markers") == str(SITES)
    assert await page.locator("path.site-alarm").count() == 1
    assert await page.locator("path.site-offline").count() == sum(not site.online for site in fleet.sites)
    # The offline country outline is drawn (no tile server by default): many country paths, no tiles.
    assert await page.locator(".leaflet-overlay-pane path").count() > SITES + 100
    assert await page.locator(".leaflet-tile").count() == 0
    await page.screenshot(path=str(screenshots / "fleet-map.png"))
    await page.locator("path.site-alarm").click()
    await page.wait_for_selector("body[data-ready=site]", timeout=10_000)
    await expect(page.locator("#site-title")).to_have_text("Durban 00003")


async def test_site_page_shows_each_battery_its_cells_and_history(
    browser: Browser, fleet: RunningFleet, screenshots: Path
) -> None:
    await raise_alarm(fleet, "site-00003", settle=True)
    page = await signed_in(browser, fleet, fleet.technician)
    await open_page(page, "#/site/site-00003", "site")
    await expect(page.locator("#site-title")).to_have_text("Durban 00003")
    batteries = page.locator("section.battery")
    await expect(batteries).to_have_count(2)
    await expect(batteries.first.locator(".cell")).to_have_count(16)
    await expect(batteries.nth(1).locator(".cell")).to_have_count(16)
    drifting = batteries.first.locator(".cell.max")
    assert await drifting.get_attribute("data-cell") == "7"
    for field in ("voltage", "current", "soc", "cell_voltages"):
        chart = batteries.first.locator(f".chart[data-field={field}]")
        await expect(chart.locator("canvas")).to_have_count(1, timeout=10_000)
        assert int(await chart.get_attribute("data-points") or 0) >= 2
    await expect(page.locator("section.inverter")).to_contain_text("55.20 V")
    await expect(page.locator("section.versions")).to_contain_text("sunsynk")
    await expect(page.locator(".site-alarms .alarm-kind")).to_have_text("cell_drift")
    await page.screenshot(path=str(screenshots / "fleet-site.png"), full_page=True)


async def test_a_raised_alarm_appears_without_reload(browser: Browser, fleet: RunningFleet, screenshots: Path) -> None:
    page = await signed_in(browser, fleet, fleet.technician)
    await page.evaluate("window.__not_reloaded = true")
    overview_row = page.locator(".grid-row[data-gateway=site-00011] .state")
    await expect(overview_row).to_have_text("online")
    started = time.monotonic()
    await raise_alarm(fleet, "site-00011", kind="low_soc")
    await expect(overview_row).to_have_text("1 alarm", timeout=5_000)
    assert await page.locator(".grid-row").first.get_attribute("data-gateway") == "site-00011"
    assert time.monotonic() - started < 5

    await open_page(page, "#/alarms", "alarms")
    second = await raise_alarm(fleet, "site-00004")
    await expect(page.locator(f".alarm-row[data-alarm='{second}']")).to_be_visible(timeout=5_000)
    await expect(page.locator("#alarm-badge")).to_have_text("2", timeout=5_000)
    await expect(page.locator(f".alarm-row[data-alarm='{second}'] .act-ack")).to_be_visible()
    await page.screenshot(path=str(screenshots / "fleet-alarms.png"))
    await page.locator(f".alarm-row[data-alarm='{second}'] .act-ack").click()
    await expect(page.locator(f".alarm-row[data-alarm='{second}'] .state")).to_have_text("acknowledged")
    assert (await fleet.store.get_alarm(second)).acknowledged_by == "tech"
    assert await page.evaluate("window.__not_reloaded") is True


async def test_a_viewer_cannot_reach_admin_actions(browser: Browser, fleet: RunningFleet) -> None:
    alarm = await raise_alarm(fleet, "site-00005", settle=True)
    page = await signed_in(browser, fleet, fleet.viewer)
    await open_page(page, "#/alarms", "alarms")
    await expect(page.locator(f".alarm-row[data-alarm='{alarm}']")).to_be_visible()
    assert await page.locator("button.act").count() == 0
    await open_page(page, "#/site/site-00005", "site")
    assert await page.locator("button.act, .act-delete-gateway, section.commands").count() == 0
    # Even a request made by hand from the page is refused by the API.
    statuses = await page.evaluate(
        """async ([token, alarm]) => {
            const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
            const ack = await fetch(`/api/v1/alarms/${alarm}/ack`, { method: "POST", headers });
            const gone = await fetch("/api/v1/gateways/site-00005", { method: "DELETE", headers });
            const command = await fetch("/api/v1/gateways/site-00005/commands",
                { method: "POST", headers, body: JSON.stringify({ kind: "refresh_state" }) });
            return [ack.status, gone.status, command.status];
        }""",
        [fleet.viewer, alarm],
    )
    assert statuses == [403, 403, 403]
    assert (await fleet.store.get_alarm(alarm)).state == "open"
    await fleet.store.get_gateway("site-00005")


async def test_an_admin_sees_delete_and_a_bad_token_is_refused(browser: Browser, fleet: RunningFleet) -> None:
    alarm = await raise_alarm(fleet, "site-00005", settle=True)
    page = await signed_in(browser, fleet, fleet.admin)
    await open_page(page, "#/alarms", "alarms")
    await expect(page.locator(f".alarm-row[data-alarm='{alarm}'] .act-delete")).to_be_visible()
    other = await browser.new_page()
    await other.goto(fleet.url + "/")
    await other.fill("#login-token", "not-a-token")
    await other.click("#login-form button[type=submit]")
    await expect(other.locator("#login-error")).to_have_text("This token is not valid.")


@pytest.mark.slow
async def test_a_battery_whose_data_stops_turns_stale_without_reload(browser: Browser, fleet: RunningFleet) -> None:
    now = time.time()
    # A new site whose only telemetry was received 56 s ago, sampled by a gateway clock an hour ahead (its
    # time is in the future); its stale budget is 60 s (three intervals of 10 s, at least a minute).
    site = sample_site(SITES + 5)
    received = now - 56
    batch = IngestBatch()
    batch.states.append((sample_state(site, received), received))
    batch.availability.append((site.gateway, Availability.ONLINE, received))
    batch.telemetry.append((sample_telemetry(site, now + 3600, 0), received))
    await fleet.store.write_batch(batch)
    page = await signed_in(browser, fleet, fleet.viewer)
    await open_page(page, f"#/site/{site.gateway}", "site")
    battery = page.locator("section.battery").first
    await expect(battery.locator(".updated b")).to_have_text(re.compile(r"^5\d s ago$"))
    await expect(battery).not_to_have_class(re.compile(r"\bstale\b"))
    await page.evaluate("window.__not_reloaded = true")
    await expect(battery).to_have_class(re.compile(r"\bstale\b"), timeout=10_000)
    await expect(battery.locator("h3")).to_contain_text("(stale)")
    assert await page.evaluate("window.__not_reloaded") is True

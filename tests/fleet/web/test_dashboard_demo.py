"""The dashboard over the whole fleet for real: `fleet serve`'s composition (Mosquitto with TLS and ACLs,
SQLite, ingest, alarms, API) with the demo's simulated gateways running the real agent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from bmsgate.fleet.agent.simulated import demo_sites, run_sites
from bmsgate.fleet.server.broker import apply_device_changes
from bmsgate.fleet.server.devices import enroll_gateway
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings, RunningServer
from bmsgate.mqtt.broker import find_mosquitto, free_port
from tests.fleet.web.browser import CHROMIUM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]
DEMO_SITES = 4
FAULT_AFTER_S = 4.0


@contextlib.asynccontextmanager
async def demo_fleet(tmp_path: Path) -> AsyncIterator[RunningServer]:
    gateway_port = free_port()
    settings = FleetServerSettings(
        data_dir=tmp_path / "fleet", http_port=0, gateway_port=gateway_port, cert_port=None, public_host="localhost"
    )
    async with FleetServer(settings) as running:
        # The third site's pack overheats a few seconds in (the demo waits a minute).
        sites = [dataclasses.replace(site, fault_after_s=FAULT_AFTER_S) for site in demo_sites(DEMO_SITES)]
        credentials = {
            site.gateway_id: enroll_gateway(
                running.data, site.gateway_id, broker_url=f"mqtts://localhost:{gateway_port}"
            )
            for site in sites
        }
        assert await apply_device_changes(running.data)
        gateways = asyncio.create_task(
            run_sites(
                sites, lambda site: credentials[site.gateway_id], tmp_path / "gw", interval=0.5, poll_interval=0.2
            )
        )
        try:
            yield running
        finally:
            gateways.cancel()
            await asyncio.gather(gateways, return_exceptions=True)


async def test_the_dashboard_shows_the_demo_fleet(browser: Browser, tmp_path: Path) -> None:
    assert CHROMIUM.exists()
    async with demo_fleet(tmp_path) as running:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        await page.goto(running.url + "/")
        await page.fill("#login-token", running.admin_token or "")
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("body[data-ready=overview]", state="attached", timeout=15_000)
        # The sites come in over MQTT while the page is open: the overview fills up live, without a reload.
        await expect(page.locator("#site-count")).to_have_text(f"{DEMO_SITES} of {DEMO_SITES} sites", timeout=30_000)
        await expect(page.locator(".grid-row .state.online")).to_have_count(DEMO_SITES, timeout=30_000)

        await page.evaluate("location.hash = '#/map'")
        await page.wait_for_selector("body[data-ready=map]", state="attached", timeout=15_000)
        await expect(page.locator("path.site-marker")).to_have_count(DEMO_SITES)

        drifting = demo_sites(DEMO_SITES)[1]
        await page.evaluate(f"location.hash = '#/site/{drifting.gateway_id}'")
        await page.wait_for_selector("body[data-ready=site]", state="attached", timeout=15_000)
        await expect(page.locator("#site-title")).to_have_text(drifting.name)
        batteries = page.locator("section.battery")
        await expect(batteries).to_have_count(drifting.packs)
        await expect(batteries.first.locator(".cell")).to_have_count(drifting.cells, timeout=15_000)
        await page.close()


async def test_a_simulated_bms_fault_appears_on_the_alarms_page_within_seconds(
    browser: Browser, tmp_path: Path
) -> None:
    faulty = next(site for site in demo_sites(DEMO_SITES) if site.fault)
    async with demo_fleet(tmp_path) as running:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        await page.goto(running.url + "/")
        await page.fill("#login-token", running.admin_token or "")
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("body[data-ready=overview]", state="attached", timeout=15_000)
        await page.evaluate("location.hash = '#/alarms'")
        await page.wait_for_selector("body[data-ready=alarms]", state="attached", timeout=15_000)
        # The simulated pack's BMS raises its over-temperature alarm; the real agent sends it, ingest stores
        # it, the alarm engine opens it and the page shows it live, without a reload.
        row = page.locator(".alarm-row", has=page.locator(f"a[href='#/site/{faulty.gateway_id}']"))
        await expect(row.first).to_be_visible(timeout=30_000)
        await expect(row.first.locator(".alarm-kind")).to_contain_text("overtemperature")
        await page.close()

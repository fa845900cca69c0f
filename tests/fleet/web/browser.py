"""Browser-test helpers: how Debian's Chromium is launched, and signing in to the dashboard."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page

from bmsgate.fleet.server.api.testing import RunningFleet

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SITES = 30
"""Sites seeded for the browser tests (all fit in the overview without scrolling)."""


async def signed_in(browser: Browser, fleet: RunningFleet, token: str) -> Page:
    """A page of the dashboard, signed in with `token`, showing the overview."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(fleet.url + "/")
    await page.fill("#login-token", token)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("body[data-ready=overview]", timeout=10_000)
    await page.wait_for_selector("body[data-live=on]", timeout=10_000)
    assert not errors, errors
    return page

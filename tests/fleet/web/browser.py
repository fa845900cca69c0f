"""Browser-test helpers: how Debian's Chromium is launched, and signing in to the dashboard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
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
GENEROUS = ApiSettings(
    token_limit=RateLimit(per_minute=60_000, burst=10_000), anonymous_limit=RateLimit(per_minute=60_000, burst=10_000)
)
"""API settings whose rate limit a browser test never reaches (the limit has its own tests)."""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright (the test is skipped where it is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


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

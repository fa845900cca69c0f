"""Browser-test fixtures: Debian's Chromium driven by Playwright, and a running, seeded fleet API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from bmsgate.fleet.server.api.ratelimit import RateLimit
from bmsgate.fleet.server.api.settings import ApiSettings
from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from tests.fleet.web.browser import CHROMIUM, CHROMIUM_ARGS, SITES

_GENEROUS = ApiSettings(
    token_limit=RateLimit(per_minute=60_000, burst=10_000), anonymous_limit=RateLimit(per_minute=60_000, burst=10_000)
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[RunningFleet]:
    async with running_fleet(tmp_path, sites=SITES, history=18, step_s=600, settings=_GENEROUS) as running:
        yield running


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: $BMSGATE_SCREENSHOTS (e.g. docs/images) or the test's temporary directory."""
    wanted = os.environ.get("BMSGATE_SCREENSHOTS")
    target = Path(wanted) if wanted else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target

"""Browser-test fixtures: Debian's Chromium driven by Playwright, and a running, seeded fleet API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from tests.fleet.web.browser import GENEROUS, SITES, chromium


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[RunningFleet]:
    async with running_fleet(tmp_path, sites=SITES, history=18, step_s=600, settings=GENEROUS) as running:
        yield running


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: $BMSGATE_SCREENSHOTS (e.g. docs/images) or the test's temporary directory."""
    wanted = os.environ.get("BMSGATE_SCREENSHOTS")
    target = Path(wanted) if wanted else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target

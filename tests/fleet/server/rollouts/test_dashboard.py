"""The dashboard's Rollouts page in a real Chromium (Playwright): groups and counts show; a viewer gets no buttons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from bmsgate.fleet.server.api.testing import RunningFleet, running_fleet
from bmsgate.fleet.server.rollouts.model import Actor
from bmsgate.fleet.updates import FailureReason, UpdatePhase
from tests.fleet.server.rollouts.helpers import report, spec, unsigned_envelope
from tests.fleet.web.browser import GENEROUS, chromium, signed_in


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[RunningFleet]:
    async with running_fleet(tmp_path, settings=GENEROUS, sign_desired=unsigned_envelope) as running:
        yield running


async def _rollout_with_progress(fleet: RunningFleet) -> tuple[str, str]:
    """A rollout of 12 sites whose canary committed and whose second group has one revert."""
    service = fleet.rollouts
    assert service is not None
    rollout = await service.create(spec(jitter_s=0, error_ratio=0.5), Actor(name="tech", role="technician"))
    published: list[str] = []

    async def publish(topic_name: str, _payload: bytes) -> None:
        published.append(topic_name.split("/")[2])

    async def answer(gateway: str, phase: UpdatePhase, reason: FailureReason | None = None) -> None:
        message = report(gateway, phase, generation=1, rollout=rollout.id, reason=reason)
        assert await service.handle_report(f"fleet/v1/{gateway}/reported", message.model_dump_json().encode())

    await service.step(publish)
    await answer(published[0], UpdatePhase.COMMITTED)
    await service.step(publish)
    await answer(published[1], UpdatePhase.REVERTED, FailureReason.HEALTH)
    await answer(published[2], UpdatePhase.STAGED)
    return rollout.id, published[3]


@pytest.mark.slow
async def test_groups_counts_and_failures_show_and_a_viewer_has_no_buttons(
    browser: Browser, fleet: RunningFleet
) -> None:
    rollout_id, second_published = await _rollout_with_progress(fleet)
    page = await signed_in(browser, fleet, fleet.viewer)
    await page.click("a[data-nav=rollouts]")
    await page.wait_for_selector("body[data-ready=rollouts]")
    assert await page.locator(".rollout-row").count() == 1
    await page.click(f".rollout-row[data-rollout='{rollout_id}'] a")
    await page.wait_for_selector("body[data-ready=rollout]")
    assert await page.locator(".group-row").count() == 3
    assert await page.locator(".group-size").all_inner_texts() == ["1", "10", "1"]
    assert await page.locator(".group-row[data-group='0'] .phase").all_inner_texts() == ["committed 1"]
    second = await page.locator(".group-row[data-group='1'] .phase").all_inner_texts()
    assert second == ["published 8", "staged 1", "reverted 1"]
    assert await page.locator(".group-row[data-group='1'] .group-reasons").inner_text() == "health 1"
    assert await page.locator(".failure-reason").all_inner_texts() == ["health"]
    assert "1 of 12 succeeded, 1 failed" in await page.locator(".rollout-summary").inner_text()
    assert await page.locator("button.act").count() == 0

    technician = await signed_in(browser, fleet, fleet.technician)
    await technician.goto(f"{fleet.url}/#/rollouts/{rollout_id}")
    await technician.wait_for_selector("body[data-ready=rollout]")
    labels = await technician.locator("button.act").all_inner_texts()
    assert labels == ["Pause", "Start next group", "Cancel"]
    await technician.click("button.act-pause")
    await technician.wait_for_selector(".rollout-state.paused")
    # The viewer's page follows through the live stream (well before its 15 s fallback reload).
    await page.wait_for_selector(".rollout-state.paused", timeout=5_000)
    # A gateway's answer reaches it the same way.
    service = fleet.rollouts
    assert service is not None
    message = report(second_published, UpdatePhase.COMMITTED, generation=1, rollout=rollout_id)
    await service.handle_report(f"fleet/v1/{second_published}/reported", message.model_dump_json().encode())
    await page.wait_for_selector(".group-row[data-group='1'] .phase-committed", timeout=5_000)

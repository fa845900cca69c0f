"""SnapshotHub: latest value, age, staleness and recovery, newest-only subscriptions."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bmsgate.model import BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _snap(battery_id: str = "a", voltage: float = 50.0) -> BatterySnapshot:
    return BatterySnapshot(battery_id=battery_id, timestamp=0.0, voltage=voltage)


def test_latest_and_age() -> None:
    clock = Clock()
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10)
    assert hub.latest("a") is None
    assert hub.age("a") is None
    assert hub.is_stale("a")
    hub.publish(_snap())
    clock.now += 3
    assert hub.latest("a") == _snap()
    assert hub.age("a") == pytest.approx(3)
    assert not hub.is_stale("a")
    clock.now += 8
    assert hub.is_stale("a")  # always against the clock, even before check_staleness runs


def test_stale_and_recovery_are_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10)
    subscription = hub.subscribe("test")
    hub.publish(_snap())
    assert subscription.get_nowait() is not None
    clock.now += 11
    with caplog.at_level(logging.INFO, logger="bmsgate.runtime.hub"):
        assert hub.check_staleness() == ["a"]
        assert hub.check_staleness() == []
        update = subscription.get_nowait()
        assert update is not None and update.stale and update.snapshot == _snap()
        hub.publish(_snap(voltage=51))
    messages = [record.getMessage() for record in caplog.records]
    assert sum("marking stale" in message for message in messages) == 1
    assert sum("fresh data again" in message for message in messages) == 1
    update = subscription.get_nowait()
    assert update is not None and not update.stale


def test_slow_subscriber_keeps_only_the_newest_per_battery() -> None:
    hub = SnapshotHub()
    subscription = hub.subscribe("slow")
    for voltage in range(100):
        hub.publish(_snap("a", float(voltage)))
        hub.publish(_snap("b", float(voltage)))
    assert subscription.pending() == 2
    assert subscription.skipped == 198
    first, second = subscription.get_nowait(), subscription.get_nowait()
    assert first is not None and second is not None
    assert {first.battery_id, second.battery_id} == {"a", "b"}
    assert first.snapshot is not None and first.snapshot.voltage == 99.0
    assert subscription.get_nowait() is None


async def test_subscriber_wakes_up_on_publish() -> None:
    hub = SnapshotHub()
    subscription = hub.subscribe("waiter")
    waiter = asyncio.create_task(subscription.get())
    await asyncio.sleep(0)
    hub.publish(_snap())
    update = await asyncio.wait_for(waiter, 1)
    assert update.battery_id == "a"


def test_replay_on_subscribe_and_close() -> None:
    hub = SnapshotHub()
    hub.publish(_snap())
    with hub.subscribe("late") as subscription:
        assert subscription.get_nowait() is not None
    hub.publish(_snap(voltage=1))
    assert subscription.get_nowait() is None


def test_register_validates_budget() -> None:
    with pytest.raises(ValueError, match="positive"):
        SnapshotHub().register("a", stale_after=0)


def test_unregister_replaces_what_is_pending_with_a_removal() -> None:
    hub = SnapshotHub()
    hub.register("a")
    subscription = hub.subscribe("output")
    hub.publish(_snap())
    hub.unregister("a")
    update = subscription.get_nowait()
    assert update is not None
    assert update.removed and update.snapshot is None and update.stale
    assert subscription.get_nowait() is None
    assert hub.battery_ids() == []
    assert hub.latest("a") is None
    hub.unregister("a")  # unknown: nothing to tell
    assert subscription.get_nowait() is None

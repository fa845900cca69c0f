"""The inverter controller on a fake clock, and its status channel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

from bmsgate.inverter.controller import InverterController, StatusChannel
from bmsgate.inverter.limits import LimitReason, LimitSettings
from bmsgate.inverter.settings import InverterSettings
from bmsgate.inverter.status import BankStatus, InverterLiveness, combined_presence, expired, initial_status
from bmsgate.model import Alarm
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.rounds import ROUND_WAIT

from .can.helpers import make_snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(**settings: object) -> tuple[Clock, SnapshotHub, InverterController]:
    clock = Clock()
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10.0)
    values: dict[str, object] = {
        "batteries": ("a",),
        "limits": LimitSettings(max_charge_current=100, recovery_hold=30.0, ramp_rate=5.0),
    }
    return clock, hub, InverterController(InverterSettings.model_validate(values | settings), clock=clock)


@contextlib.asynccontextmanager
async def _running(controller: InverterController, hub: SnapshotHub) -> AsyncIterator[None]:
    """The controller's task for the block; cancelled after it (and it ends by that cancellation only)."""
    task = asyncio.create_task(controller.run(hub))
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_each_refresh_publishes_one_numbered_status() -> None:
    clock, hub, controller = setup()
    assert controller.status.sequence == 0
    assert controller.status.state is BankStatus.STARTING
    hub.publish(make_snapshot())
    clock.now += 2.0
    first = controller.refresh(hub, fresh_data=True)
    assert (first.sequence, first.updated_at, first.data_age, first.heartbeat) == (1, 102.0, 2.0, 1)
    assert controller.channel.latest is first and first.last_fresh is first.bank
    assert first.data_age_at(105.0) == 5.0
    second = controller.refresh(hub)
    assert second.sequence == 2 and second.heartbeat == 1  # no fresh data, no heartbeat


def test_limits_drop_at_once_and_recover_slowly() -> None:
    clock, hub, controller = setup()
    hub.publish(make_snapshot())
    assert controller.refresh(hub).limits.charge_current == 100.0
    clock.now += 1.0
    hub.publish(make_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False))
    assert controller.refresh(hub).limits.charge_current == 0.0  # at once
    hub.publish(make_snapshot())
    currents = []
    for _ in range(40):
        clock.now += 1.0
        hub.publish(make_snapshot())
        currents.append(controller.refresh(hub).limits.charge_current)
    assert currents[:29] == [0.0] * 29  # held for recovery_hold
    assert currents[29:] == sorted(currents[29:])
    assert 0.0 < currents[-1] <= 5.0 * 11  # then ramps at 5 A/s


def test_stale_data_gives_the_safe_status_and_the_bank_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bmsgate.inverter.controller")
    clock, hub, controller = setup()
    hub.publish(make_snapshot())
    controller.refresh(hub)
    controller.refresh(hub)
    clock.now += 11.0
    for _ in range(3):
        status = controller.refresh(hub)
    assert status.state is BankStatus.STALE
    assert status.limits.charge_current == status.limits.discharge_current == 0.0
    assert status.reason is LimitReason.STALE_DATA
    assert status.last_fresh is not None and status.last_fresh.soc == 50.0
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "bank ok: 1 of 1 packs online, limits none",
        "bank stale: 0 of 1 packs online, limits stale data",
    ]
    assert [record.levelno for record in caplog.records] == [logging.INFO, logging.WARNING]


def test_safe_after_is_one_budget_for_every_output() -> None:
    clock, hub, controller = setup(safe_after=3.0)
    hub.publish(make_snapshot())
    assert not controller.refresh(hub).bank.stale
    clock.now += 3.5  # the hub's 10 s budget still runs
    assert controller.refresh(hub).bank.stale


def test_an_expired_status_is_stale_with_zero_limits() -> None:
    _clock, hub, controller = setup()
    hub.publish(make_snapshot())
    status = controller.refresh(hub)
    old = expired(status)
    assert old.bank.stale and old.bank.ever_seen and old.state is BankStatus.STALE
    assert (old.limits.charge_current, old.limits.discharge_current) == (0.0, 0.0)
    assert old.limits.charge_voltage == status.limits.charge_voltage  # held, never raised
    assert old.last_fresh is status.bank and old.sequence == status.sequence
    assert expired(old) is old
    assert expired(initial_status(("a",))).state is BankStatus.STARTING


def test_inverter_presence_combines_every_outputs_watch() -> None:
    clock, hub, controller = setup()
    assert controller.refresh(hub).inverter_present is None
    can = controller.watch(InverterLiveness(1.0, clock(), what="CAN"))
    modbus = controller.watch(InverterLiveness(1.0, clock(), what="Modbus"))
    can.seen(clock())
    assert controller.refresh(hub).inverter_present is True
    clock.now += 2.0
    assert controller.refresh(hub).inverter_present is False
    modbus.seen(clock())
    assert controller.refresh(hub).inverter_present is True
    assert combined_presence([None, None]) is None
    assert combined_presence([False, None]) is False


def test_settings_keep_the_status_timeout_beyond_the_refreshes() -> None:
    with pytest.raises(ValueError, match="status_timeout"):
        InverterSettings(refresh_interval=5.0, status_timeout=10.0)


async def test_a_slow_reader_gets_only_the_newest_status() -> None:
    channel = StatusChannel(initial_status())
    with channel.subscribe() as reader:
        assert (await reader.get()).sequence == 0  # the current value at once
        assert reader.get_nowait() is None
        statuses = [dataclasses.replace(initial_status(), sequence=number) for number in range(1, 6)]
        for status in statuses:
            channel.publish(status)
        assert await reader.get() is statuses[-1]  # nothing queued behind it
        waiting = asyncio.create_task(reader.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        newest = dataclasses.replace(initial_status(), sequence=6)
        channel.publish(newest)
        assert await asyncio.wait_for(waiting, 1) is newest
    channel.publish(initial_status())  # a closed reader is no longer notified


async def test_run_refreshes_on_bank_updates_and_on_the_tick() -> None:
    hub = SnapshotHub()
    hub.register("a", stale_after=10.0)
    controller = InverterController(InverterSettings(batteries=("a",), refresh_interval=0.05))
    async with _running(controller, hub):
        await asyncio.sleep(0)
        assert controller.status.sequence == 1
        hub.publish(make_snapshot())
        for _ in range(100):
            await asyncio.sleep(0.005)
            if controller.status.heartbeat == 1:
                break
        assert controller.status.heartbeat == 1 and controller.status.state is BankStatus.OK
        ticked = controller.status.sequence
        await asyncio.sleep(0.2)
        assert controller.status.sequence >= ticked + 2  # time advances without new data
        assert controller.status.heartbeat == 1


async def test_a_pack_outside_the_bank_recomputes_nothing_and_the_tick_still_comes() -> None:
    hub = SnapshotHub()
    hub.register("a", stale_after=10.0)
    hub.register("other", stale_after=10.0)
    controller = InverterController(InverterSettings(batteries=("a",), refresh_interval=0.2))
    async with _running(controller, hub):
        await asyncio.sleep(0)
        assert controller.status.sequence == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Updates of a pack outside the bank, faster than the tick: none recomputes the status...
        while controller.status.sequence == 1:
            hub.publish(make_snapshot("other"))
            await asyncio.sleep(0.02)
            assert loop.time() - started < 5, "the tick never came"
        # ...and they do not hold the tick back either: it comes on the shared grid, within one interval.
        ticked = loop.time()
        assert ticked - started < 0.2 + 0.15
        assert ticked % 0.2 < 0.1, "the tick is not on the grid of its interval"
        assert controller.status.sequence == 2
        hub.publish(make_snapshot("a"))  # a bank pack's snapshot recomputes at once
        async with asyncio.timeout(0.1):
            while controller.status.sequence == 2:
                await asyncio.sleep(0.005)
        assert controller.status.heartbeat == 1


def test_status_says_which_end_of_the_temperature_curves_derates() -> None:
    _clock, hub, controller = setup()
    hub.publish(make_snapshot(temperatures=(3.0, 20.0)))
    derating = controller.refresh(hub).temperature_derating
    assert derating.cold and not derating.hot
    assert not expired(controller.status).temperature_derating.cold


async def test_one_refresh_for_a_round_of_bank_polls_and_its_tick() -> None:
    # Two bank packs polled at the controller's own tick, their snapshots a few loop passes apart: one refresh
    # with both (and the tick), not one for the tick with the old data and one per pack after it.
    hub = SnapshotHub()
    for battery_id in ("a", "b"):
        hub.register(battery_id, stale_after=10.0)
    controller = InverterController(InverterSettings(batteries=("a", "b"), refresh_interval=0.2))
    loop = asyncio.get_running_loop()
    async with _running(controller, hub):
        await asyncio.sleep(0)
        for _round in range(3):
            await sleep_until(tick_after(loop.time(), 0.2))
            before = controller.status.sequence
            for battery_id in ("a", "b"):
                hub.rounds.began(battery_id)
            for battery_id in ("a", "b"):
                for _ in range(2):
                    await asyncio.sleep(0)
                hub.publish(make_snapshot(battery_id))
                hub.rounds.ended(battery_id)
            await asyncio.sleep(0.05)
            assert controller.status.sequence == before + 1, "more than one refresh for the round"
            assert controller.status.bank.packs_online == 2
        # A pack's snapshot outside any round still recomputes at once.
        before = controller.status.sequence
        hub.publish(make_snapshot("a"))
        async with asyncio.timeout(0.1):
            while controller.status.sequence == before:
                await asyncio.sleep(0.005)


async def test_round_refreshed_waits_for_the_controllers_refresh_of_the_round() -> None:
    hub = SnapshotHub()
    hub.register("a", stale_after=10.0)
    controller = InverterController(InverterSettings(batteries=("a",), refresh_interval=3.0))
    async with _running(controller, hub):
        await asyncio.sleep(0)
        await controller.round_refreshed(hub)  # no round: at once
        hub.rounds.began("a")
        waiter = asyncio.create_task(controller.round_refreshed(hub))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        hub.publish(make_snapshot("a"))
        hub.rounds.ended("a")
        async with asyncio.timeout(0.1):
            await waiter
        assert controller.status.bank.packs_online == 1
        # A round that never ends: no longer than its bound and the margin after it.
        hub.rounds.began("a")
        started = asyncio.get_running_loop().time()
        await controller.round_refreshed(hub)
        assert asyncio.get_running_loop().time() - started < ROUND_WAIT + 0.2

"""The shared tick grid: periodic tasks wake together, on multiples of their period, never twice for one tick."""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.inverter.controller import InverterController
from bmsgate.inverter.settings import InverterSettings
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import get_protocol
from bmsgate.runtime.cadence import TICK_TOLERANCE, sleep_until, tick_after, tick_at_or_after
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.simulation import PackConfig
from bmsgate.runtime.supervisor import BatteryRuntime, Supervisor
from bmsgate.transports.simulator import SimulatorTransport

JBD = get_protocol("jbd")
PERIODS = st.sampled_from([0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 1.0, 2.0, 5.0, 7.0])
NOW = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)


@given(NOW, PERIODS)
def test_the_next_tick_is_a_multiple_of_the_period_within_one_period(now: float, period: float) -> None:
    tick = tick_after(now, period)
    assert now < tick <= now + period + TICK_TOLERANCE
    assert math.isclose(tick / period, round(tick / period), abs_tol=1e-6)


@given(NOW, PERIODS)
def test_a_task_woken_just_before_its_tick_does_not_get_the_same_tick_again(now: float, period: float) -> None:
    tick = tick_after(now, period)
    # asyncio runs a timer up to its clock's resolution early: the task reads a time a hair below the tick.
    assert tick_after(tick - 1e-9, period) > tick
    assert tick_at_or_after(tick - 1e-9, period) == tick
    assert tick_at_or_after(tick, period) == tick


def test_periods_that_divide_each_other_meet_on_the_same_instant() -> None:
    # The same float: timers with equal deadlines run in one pass of the event loop.
    assert tick_after(12.3, 0.5) == tick_after(12.3, 1.0) - 0.5
    assert tick_after(13.7, 0.5) == tick_after(13.7, 1.0) == tick_after(13.7, 2.0)


@pytest.mark.parametrize("period", [0.0, -1.0, math.inf, math.nan])
def test_a_period_that_is_not_positive_and_finite_is_refused(period: float) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        tick_after(1.0, period)
    with pytest.raises(ValueError, match="positive finite"):
        tick_at_or_after(1.0, period)


@contextmanager
def counted_wake_ups(loop: asyncio.AbstractEventLoop) -> Iterator[list[float]]:
    """The loop's blocking waits (a select with a timeout other than zero): each is one wake-up from sleep."""
    selector = loop._selector  # type: ignore[attr-defined]
    original = selector.select
    waits: list[float] = []

    def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout > 0:
            waits.append(loop.time())
        return original(timeout)  # type: ignore[no-any-return]

    selector.select = select
    try:
        yield waits
    finally:
        selector.select = original


async def test_two_sleepers_for_the_same_tick_share_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    tick = tick_after(loop.time() + 0.05, 0.1)
    woken: list[float] = []

    async def sleeper() -> None:
        await sleep_until(tick)
        woken.append(loop.time())

    with counted_wake_ups(loop) as waits:
        await asyncio.gather(sleeper(), sleeper(), sleeper())
    assert len(woken) == 3
    assert all(t >= tick - TICK_TOLERANCE for t in woken)
    assert len(waits) <= 2  # gather's own wait, then the single tick (the tasks' timers are one instant)


async def test_a_cancelled_sleep_leaves_no_timer_behind() -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60

    def pending() -> list[asyncio.TimerHandle]:
        return [h for h in loop._scheduled if not h.cancelled() and h.when() == deadline]  # type: ignore[attr-defined]

    task = asyncio.create_task(sleep_until(deadline))
    await asyncio.sleep(0)
    assert len(pending()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pending() == []


class RecordingClient(BatteryClient):
    """A real client on a simulated pack that notes when each poll starts."""

    def __init__(self, battery_id: str, starts: list[tuple[str, float]]) -> None:
        transport = SimulatorTransport(JBD, PackConfig(cells=4), battery_id=battery_id)
        super().__init__(JBD, transport, battery_id=battery_id, options=ClientOptions(request_timeout=0.5))
        self._starts = starts

    async def read(self) -> BatterySnapshot:
        self._starts.append((self.battery_id, asyncio.get_running_loop().time()))
        return await super().read()


async def test_batteries_and_the_controller_poll_and_tick_in_shared_wake_ups() -> None:
    interval, duration = 0.5, 3.1
    starts: list[tuple[str, float]] = []
    batteries = [
        BatteryRuntime(name, name, RecordingClient(name, starts), poll_interval=interval, stale_after=5.0)
        for name in ("a", "b", "c")
    ]
    controller = InverterController(InverterSettings(batteries=("a", "b", "c"), refresh_interval=interval))
    supervisor = Supervisor(batteries, [controller])
    loop = asyncio.get_running_loop()
    with counted_wake_ups(loop) as waits:
        await supervisor.run(duration=duration)
    later = [(name, t) for name, t in starts if t > starts[0][1] + interval]  # past the first, unaligned polls

    def tick_of(t: float) -> int:
        # A start belongs to the tick at or before it (a loaded machine starts it late, never early).
        return math.floor((t + TICK_TOLERANCE) / interval)

    ticks = {name: {tick_of(t) for other, t in later if other == name} for name in ("a", "b", "c")}
    assert len(ticks["a"]) >= 4
    assert ticks["a"] == ticks["b"] == ticks["c"], "the batteries polled on different ticks"
    # On the grid: each poll starts a little after a multiple of the interval, never before.
    for _, t in later:
        assert -TICK_TOLERANCE <= t - tick_of(t) * interval < 0.25
    # Three pollers, the controller and the staleness sweep: one wake-up per tick (the replies of a
    # simulated pack come without a delay), where separate timers took one each.
    assert len(waits) <= duration / interval * 1.5 + 3, waits


async def test_the_staleness_sweep_sleeps_until_a_battery_can_go_stale() -> None:
    hub = SnapshotHub()
    checks: list[float] = []
    check = hub.check_staleness
    loop = asyncio.get_running_loop()

    def counted() -> list[str]:
        checks.append(loop.time())
        return check()

    hub.check_staleness = counted  # type: ignore[method-assign]
    hub.register("a", stale_after=0.3)
    sweep = asyncio.create_task(hub.run(interval=0.05))
    try:
        await asyncio.sleep(0.4)
        assert len(checks) == 1, "the sweep woke with no battery that could go stale"
        published = loop.time()
        hub.publish(_snapshot("a"))  # fresh now: stale 0.3 s later unless another comes
        while not hub.is_stale("a") or not checks or checks[-1] < published + 0.3:
            await asyncio.sleep(0.01)
            assert loop.time() - published < 2.0, "never marked stale"
        await asyncio.sleep(0.05)
        marked = [t for t in checks if t > published]
        # Woken by the snapshot, then once at the first tick after the deadline (not every 0.05 s).
        assert len(marked) <= 3, marked
        assert published + 0.3 <= marked[-1] <= published + 0.3 + 0.05 + 0.05
    finally:
        sweep.cancel()


def _snapshot(battery_id: str) -> BatterySnapshot:
    return BatterySnapshot(battery_id=battery_id, timestamp=0.0, protocol="test")

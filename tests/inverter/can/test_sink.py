"""CanSink on python-can's virtual bus, against an inverter simulator decoding with our DBC files."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import statistics
from pathlib import Path
from typing import Any

import can
import pytest

from bmsgate.errors import SinkError
from bmsgate.inverter.can.bus import CanBus, FrameBus
from bmsgate.inverter.can.profiles import OutputPhase, load_profile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.sink import SAFE_HOLD_PERIODS, CanSink
from bmsgate.model import Alarm
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.hub import SnapshotHub

from .helpers import InverterSimulator, can_sink, channel_name, make_snapshot, running, wait_for


def settings(channel: str, **changes: Any) -> CanSettings:
    values: dict[str, Any] = {"interface": "virtual", "channel": channel, "period": 0.05}
    values.update(changes)
    return CanSettings(**values)


def make_hub(stale_after: float = 60.0) -> SnapshotHub:
    hub = SnapshotHub()
    hub.register("a", stale_after=stale_after)
    return hub


async def _record_sends(sink: CanSink, sends: list[tuple[float, frozenset[Alarm]]], until: float = math.inf) -> None:
    """Append (loop time, alarms sent) for every frame set the sink sends, until `until` (or cancelled)."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        sink.sent.clear()
        await sink.sent.wait()
        assert sink._sent_signature is not None
        sends.append((loop.time(), sink._sent_signature[1]))


@pytest.mark.parametrize("period", [0.1, 0.2])  # pylon's min_interval is 0.1: equal to it, and above it
async def test_frame_sets_go_out_on_the_shared_grid_without_drift(period: float) -> None:
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    try:
        async with running(can_sink(settings(channel, period=period)), hub) as sink:
            deadline = loop.time() + 33 * period
            while loop.time() < deadline:
                sink.sent.clear()
                await sink.sent.wait()
                sent_at.append(loop.time())
    finally:
        simulator.close()
    # Past the first set (sent at once): no drift. Each set's offset from a fixed grid of the period stays where
    # it was (medians of the first and the last ten); a set timed from the previous one's send drifts by the
    # loop's latency every period instead, about a millisecond each.
    regular = sent_at[1:]
    assert len(regular) >= 30
    offsets = [t - (regular[0] + index * period) for index, t in enumerate(regular)]
    drift = statistics.median(offsets[-10:]) - statistics.median(offsets[:10])
    assert abs(drift) < 0.008, f"drifted {drift * 1000:.1f} ms over {len(offsets)} sets"
    if period > 0.1:
        # With room above min_interval the sets join the shared grid: a little after a multiple of the period.
        phases = sorted(t - math.floor(t / period) * period for t in regular)
        assert phases[len(phases) // 2] < 0.02, f"median phase {phases[len(phases) // 2]:.3f} s: not on the grid"


@pytest.mark.parametrize("name", ["pylon", "solark", "sma"])
async def test_full_frame_set_every_period(name: str) -> None:
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile(name))
    try:
        async with running(can_sink(settings(channel, profile=name)), hub) as sink:
            await wait_for(lambda: all(simulator.count(i) >= 6 for i in sink.profile.frame_ids))
            assert simulator.signals(0x351)["charge_voltage_limit"] == pytest.approx(55.2)
            assert simulator.signals(0x356)["voltage"] == pytest.approx(52.8)
            times = simulator.times(0x351)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            # The profile's minimum interval caps the rate (SMA: never faster than 200 ms).
            expected = max(0.05, sink.profile.min_interval)
            assert statistics.median(gaps) == pytest.approx(expected, abs=0.015)
            assert sink.phase is OutputPhase.NORMAL
    finally:
        simulator.close()


async def test_stale_sequence_keep_safe_silence() -> None:
    channel = channel_name()
    hub = make_hub(stale_after=0.3)
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    try:
        async with running(can_sink(settings(channel, silent_after=0.8)), hub) as sink:
            await wait_for(lambda: simulator.count(0x351) >= 2)
            assert simulator.signals(0x351)["charge_current_limit"] == pytest.approx(100.0)
            await wait_for(lambda: sink.phase is OutputPhase.SAFE)
            await wait_for(lambda: simulator.signals(0x351)["charge_current_limit"] == 0.0)
            flags = simulator.signals(0x359)
            assert flags["protect_system_error"] == 1.0
            assert flags["warn_internal_communication"] == 1.0
            assert simulator.signals(0x35C)["charge_enable"] == 0.0
            assert simulator.signals(0x351)["charge_voltage_limit"] > 0  # never 0
            await wait_for(lambda: sink.phase is OutputPhase.SILENT)
            await asyncio.sleep(0.1)  # a frame set may have been under way
            count = simulator.count(0x351)
            await asyncio.sleep(0.3)
            assert simulator.count(0x351) == count  # silence
            hub.publish(make_snapshot())
            await wait_for(lambda: simulator.count(0x351) > count)
            assert sink.phase is OutputPhase.NORMAL
            # Recovery is slow: limits stay at 0 (held) right after the data returns.
            assert simulator.signals(0x351)["charge_current_limit"] == 0.0
    finally:
        simulator.close()


async def test_safe_frames_come_before_silence_when_the_hub_budget_is_longer(tmp_path: Path) -> None:
    # Scaled down from the review: the pack's stale_after (2 s) is longer than silent_after (0.4 s). The
    # output must still go keep -> safe (zero limits, error flags) -> silent, never keep -> silent.
    log = tmp_path / "can.log"
    hub = make_hub(stale_after=2.0)
    hub.publish(make_snapshot())
    sink = can_sink(settings(channel_name(), silent_after=0.4, log_file=log))
    phases: list[OutputPhase] = []
    sink.add_listener(lambda _status: phases.append(sink.phase))
    async with running(sink, hub):
        await wait_for(lambda: sink.phase is OutputPhase.SILENT, timeout=3.0)
        await asyncio.sleep(0.2)
        sets = sink.frame_sets
        await asyncio.sleep(0.2)
        assert sink.frame_sets == sets  # silence
        assert hub.is_stale("a") is False  # the hub's budget has not even run out yet
    # 0x351 bytes 2-5: CCL and DCL (0.1 A).
    limits = [line.split("#")[1][4:] for line in log.read_text().splitlines() if " 351#" in line]
    full, safe = "E803E803", "00000000"
    assert limits[0] == full
    first_safe = limits.index(safe)
    assert set(limits[:first_safe]) == {full}
    assert limits[first_safe:] == [safe] * (len(limits) - first_safe)
    assert len(limits) - first_safe >= SAFE_HOLD_PERIODS  # a few periods of safe frames
    flags = [line.split("#")[1] for line in log.read_text().splitlines() if " 359#" in line]
    assert flags[-1] != flags[0]  # error flags set in the safe frames
    # The phase machine itself never skipped the safe phase.
    transitions = [phase for phase, _ in itertools.groupby(phases)]
    assert transitions == [OutputPhase.NORMAL, OutputPhase.SAFE, OutputPhase.SILENT]


async def test_safe_phase_starts_at_silent_after_with_the_default_budgets() -> None:
    # Default silent_after with a hub budget beyond it: the output counts the data as stale at silent_after.
    clock = [0.0]
    hub = SnapshotHub(clock=lambda: clock[0])
    hub.register("a", stale_after=1000.0)
    hub.publish(make_snapshot())
    sink = can_sink(settings(channel_name()), clock=lambda: clock[0])

    def phase_at(now: float) -> OutputPhase:
        clock[0] = now
        sink.controller.refresh(hub)
        sink.refresh()
        return sink.phase

    assert phase_at(0.0) is OutputPhase.NORMAL
    assert phase_at(300.5) is OutputPhase.SAFE
    assert [f.data[2:].hex() for f in sink.frames if f.arbitration_id == 0x351] == ["00000000"]  # CCL = DCL = 0
    hold = SAFE_HOLD_PERIODS * max(sink.profile.period, sink.profile.min_interval)
    assert phase_at(300.5 + hold * 0.9) is OutputPhase.SAFE
    assert phase_at(300.5 + hold) is OutputPhase.SILENT
    assert sink.frames == []


async def test_keepalive_loss_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bmsgate")
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    try:
        sink = can_sink(settings(channel, keepalive_timeout=0.3))
        async with running(sink, hub):
            async with simulator.sending(0x305, 0.05):
                await wait_for(lambda: sink.status.inverter_present is True)
                assert sink.status.to_dict()["inverter_present"] is True
            await wait_for(lambda: sink.status.inverter_present is False)
            await asyncio.sleep(0.2)
        messages = [r.message for r in caplog.records if r.message.startswith("inverter ")]
        assert messages == [
            "inverter seen: CAN frame 0x305",
            "inverter missing: no CAN frame 0x305 for more than 0.3 s",
        ]
    finally:
        simulator.close()


async def test_growatt_answers_each_request() -> None:
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    profile = load_profile("growatt-lv")
    simulator = InverterSimulator(channel, profile)
    try:
        async with running(can_sink(settings(channel, profile="growatt-lv")), hub) as sink:
            await asyncio.sleep(0.2)
            assert simulator.count(0x311) == 0  # never unasked
            for expected in (1, 2, 3):
                simulator.send(0x301)

                def answered(n: int = expected) -> bool:
                    return all(simulator.count(i) == n for i in profile.frame_ids)

                await wait_for(answered)
            assert simulator.signals(0x313)["voltage"] == pytest.approx(52.8)
            assert simulator.signals(0x313)["soc"] == 50.0
            assert simulator.signals(0x319)["charge_enable"] == 1.0  # Rev_04: 0x319 byte 0 bit 7
            # The requests are signs of life; the status says so from the controller's next refresh on (the
            # three answers can all come before it: asserting at once failed now and then).
            await wait_for(lambda: sink.status.inverter_present is True, timeout=3.0)
    finally:
        simulator.close()


async def test_no_two_frame_sets_closer_than_min_interval_around_an_urgent_one() -> None:
    # pylon's min_interval is 0.1; a period of 0.15 puts the regular tick after an urgent set sooner than that.
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    loop = asyncio.get_running_loop()
    period = 0.15
    sends: list[tuple[float, frozenset[Alarm]]] = []

    try:
        async with running(can_sink(settings(channel, period=period)), hub) as sink:
            recorder = asyncio.create_task(_record_sends(sink, sends, loop.time() + 3.0))
            for _ in range(4):
                await asyncio.sleep(0.3)
                # An alarm a little before a tick: the urgent set, then the regular one min_interval later.
                tick = math.floor(loop.time() / period + 1) * period
                await asyncio.sleep(max(0.0, tick - 0.02 - loop.time()))
                alarms = frozenset({Alarm.CELL_OVERVOLTAGE}) if len(sends) % 2 else frozenset()
                hub.publish(make_snapshot(alarms=alarms, charge_enabled=not alarms))
            await recorder
    finally:
        simulator.close()
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sends)]
    assert len(gaps) >= 10
    # The loop's own lateness may shave a set's gap by a few milliseconds, never by a whole tick's worth.
    assert min(gaps) > 0.1 - 0.01, sorted(gaps)[:5]


async def test_alarm_reaches_the_bus_before_the_next_period() -> None:
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    try:
        async with running(can_sink(settings(channel, period=2.0)), hub):
            await wait_for(lambda: simulator.count(0x359) >= 1)
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            hub.publish(make_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False))
            await wait_for(lambda: simulator.signals(0x359)["protect_high_voltage"] == 1.0, timeout=1.5)
            assert loop.time() - started < 0.5
            assert simulator.signals(0x351)["charge_current_limit"] == 0.0
    finally:
        simulator.close()


async def test_soc_forcing_on_the_wire() -> None:
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot(charge_enabled=False))
    simulator = InverterSimulator(channel, load_profile("pylon"))
    try:
        async with running(can_sink(settings(channel, soc_forcing=True)), hub):
            await wait_for(lambda: simulator.count(0x355) >= 1)
            assert simulator.signals(0x355)["soc"] == 100.0
    finally:
        simulator.close()


async def test_force_charge_request_at_low_soc() -> None:
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot(soc=4.0))
    simulator = InverterSimulator(channel, load_profile("pylon"))
    try:
        async with running(can_sink(settings(channel)), hub):
            await wait_for(lambda: simulator.count(0x35C) >= 1)
            assert simulator.signals(0x35C)["force_charge_1"] == 1.0
            assert simulator.signals(0x35C)["force_charge_2"] == 0.0
    finally:
        simulator.close()


async def test_candump_log_and_demo_constructor(tmp_path: Path) -> None:
    log = tmp_path / "can.log"
    hub = SnapshotHub()
    hub.publish(make_snapshot("house"))
    sink = can_sink(
        CanSettings(interface="virtual", channel="bmsgate-demo", profile="pylon", log_file=log), batteries=("house",)
    )
    async with running(sink, hub):
        await wait_for(lambda: sink.frame_sets >= 2, timeout=3.0)
    lines = log.read_text().splitlines()
    assert len(lines) >= 12
    pattern = re.compile(r"^\(\d{10}\.\d{6}\) bmsgate-demo [0-9A-F]{3}#(?:[0-9A-F]{2})*$")
    assert all(pattern.match(line) for line in lines), lines[:3]
    assert lines[0].endswith(" 351#2802E803E803")


async def test_dry_run_logs_without_a_bus(tmp_path: Path) -> None:
    log = tmp_path / "dry.log"
    hub = make_hub()
    hub.publish(make_snapshot())
    sink = can_sink(settings("can0", interface="socketcan", profile="growatt-lv", dry_run=True, log_file=log))
    async with running(sink, hub):
        await wait_for(lambda: sink.frame_sets >= 2)
    assert " can0 311#" in log.read_text()


class FlakyBus(can.BusABC):
    """A python-can bus that fails once, on send or receive (the only fake: the library edge)."""

    def __init__(self, channel: str, failure: str | None) -> None:
        self.inner = can.Bus(interface="virtual", channel=channel)
        self.failure = failure
        self.channel_info = "flaky"
        super().__init__(channel=channel)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self.failure == "send":
            self.failure = None
            raise can.CanOperationError("Transmit buffer full (bus-off?)")
        self.inner.send(msg, timeout)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self.failure == "recv":
            self.failure = None
            raise can.CanOperationError("controller problem")
        return self.inner.recv(timeout), False

    def shutdown(self) -> None:
        self.inner.shutdown()
        super().shutdown()


async def test_bus_errors_reopen_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bmsgate.inverter.can")
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    plan = ["open", "send", "recv", "send"]  # one failure per (re)opened bus, then a healthy bus
    opened: list[CanBus] = []

    def opener(config: CanSettings) -> FrameBus:
        failure = plan.pop(0) if plan else None
        if failure == "open":
            raise SinkError("cannot open virtual bus: no such device", sink="can")
        bus = CanBus(config, lambda: FlakyBus(channel, failure))
        bus.open()
        opened.append(bus)
        return bus

    simulator = InverterSimulator(channel, load_profile("pylon"))
    try:
        sink = can_sink(settings(channel, reopen_backoff_max=0.2), bus_opener=opener)
        async with running(sink, hub):
            await wait_for(lambda: len(opened) == 4, timeout=10.0)
            sent = simulator.count(0x351)
            await wait_for(lambda: simulator.count(0x351) >= sent + 3, timeout=5.0)
            assert sink.bus_failures == 4
        # Logged once per change: a failure while already failing goes to DEBUG; each WARNING has its recovery.
        warnings = sum("bus failed" in r.message for r in caplog.records if r.levelno == logging.WARNING)
        recoveries = sum(r.message == "CAN: bus working again" for r in caplog.records)
        assert 1 <= warnings == recoveries < 4
    finally:
        simulator.close()


async def test_open_failure_of_a_real_interface_is_a_sink_error() -> None:
    bus = CanBus(CanSettings(interface="socketcan", channel="bmsgate-no-such-can"))
    with pytest.raises(SinkError, match="cannot open socketcan bus"):
        bus.open()
    await bus.close()
    with pytest.raises(SinkError, match="not open"):
        await bus.send([])


@pytest.mark.parametrize(("gap", "requests"), [(0.05, 40), (0.0, 10)])
async def test_growatt_answers_every_one_of_many_requests(gap: float, requests: int) -> None:
    # The inverter asks on its own clock, which runs at the profile's period: requests land right on
    # the sink's wait timeout (gap = period), or arrive back to back while an answer is still going out
    # (a burst below the sink's backlog cap).
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    profile = load_profile("growatt-lv")
    simulator = InverterSimulator(channel, profile)
    try:
        async with running(can_sink(settings(channel, profile="growatt-lv")), hub):
            await asyncio.sleep(0.2)
            for _ in range(requests):
                simulator.send(0x301)
                await asyncio.sleep(gap)

            def answered() -> bool:
                return all(simulator.count(i) >= requests for i in profile.frame_ids)

            await wait_for(answered, what=lambda: str({hex(i): simulator.count(i) for i in profile.frame_ids}))
            await asyncio.sleep(0.3)
            assert {simulator.count(i) for i in profile.frame_ids} == {requests}
    finally:
        simulator.close()


async def test_the_set_at_the_banks_poll_tick_carries_that_rounds_values() -> None:
    # The bank's poll at the CAN tick brings an alarm a few loop passes after the tick. The tick's set waits for
    # the round and carries it: one set per tick, not the previous values followed by an urgent set.
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    loop = asyncio.get_running_loop()
    period = 0.3
    sent: list[tuple[float, frozenset[Alarm]]] = []

    try:
        async with running(can_sink(settings(channel, period=period)), hub) as sink:
            recorder = asyncio.create_task(_record_sends(sink, sent))
            await wait_for(lambda: len(sent) >= 2)
            ticks = []
            for index in range(4):
                tick = tick_after(loop.time(), period)
                ticks.append(tick)
                await sleep_until(tick)
                hub.rounds.began("a")
                for _ in range(3):
                    await asyncio.sleep(0)
                alarms = frozenset({Alarm.CELL_OVERVOLTAGE}) if index % 2 == 0 else frozenset()
                hub.publish(make_snapshot(alarms=alarms, charge_enabled=not alarms))
                hub.rounds.ended("a")
                await asyncio.sleep(period * 0.8)
            recorder.cancel()
    finally:
        simulator.close()
    for index, tick in enumerate(ticks):
        in_period = [alarms for at, alarms in sent if tick - 0.01 <= at < tick + period * 0.8]
        expected = frozenset({Alarm.CELL_OVERVOLTAGE}) if index % 2 == 0 else frozenset()
        assert in_period == [expected], f"tick {index}: sets {in_period}"


async def test_a_set_late_for_a_slow_round_keeps_min_interval_to_the_next() -> None:
    # A bank poll that outlasts its round holds the tick's set back by up to the round's bound; the next tick
    # may then come sooner than min_interval after it went out, so the floor counts from the send as well.
    channel = channel_name()
    hub = make_hub()
    hub.publish(make_snapshot())
    simulator = InverterSimulator(channel, load_profile("pylon"))
    loop = asyncio.get_running_loop()
    period = 0.3
    sends: list[tuple[float, frozenset[Alarm]]] = []

    try:
        async with running(can_sink(settings(channel, period=period)), hub) as sink:
            recorder = asyncio.create_task(_record_sends(sink, sends))
            await wait_for(lambda: len(sends) >= 2)
            for index in range(6):
                await sleep_until(tick_after(loop.time(), period))
                if index % 2 == 0:
                    hub.rounds.began("a")  # never ends within the round's bound
                    await asyncio.sleep(0.33)
                    hub.rounds.ended("a")
            recorder.cancel()
    finally:
        simulator.close()
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sends)]
    assert len(gaps) >= 6
    assert min(gaps) > 0.1 - 0.01, sorted(gaps)[:4]

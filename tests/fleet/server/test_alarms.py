"""Alarm rules and the alarm engine against a real store: open, hysteresis, close, history, live feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bmsgate.fleet.protocol import BatteryReading, EventKind, LocationFix
from bmsgate.fleet.server.alarm_rules import AlarmSettings, Decision, Kind, ThresholdRule, bms_kind, distance_m
from bmsgate.fleet.server.alarms import AlarmEngine
from bmsgate.fleet.server.live import LiveFeed, LiveKind
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import (
    AlarmAction,
    AlarmFilter,
    AlarmRecord,
    AlarmState,
    Availability,
    IngestBatch,
    NewAlarm,
    Severity,
    WriteResult,
)
from bmsgate.model import Alarm
from tests.fleet.server.store.messages import T0, event, snapshot, state, telemetry


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Repository]:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    yield store
    await store.close()


def test_threshold_rules_have_hysteresis() -> None:
    rule = ThresholdRule(Kind.CELL_DRIFT, 0.1, 0.05, True, Severity.WARNING, "V")
    assert rule.decide(0.09, active=False) is Decision.KEEP
    assert rule.decide(0.1, active=False) is Decision.OPEN
    assert rule.decide(0.07, active=True) is Decision.KEEP
    assert rule.decide(0.05, active=True) is Decision.CLOSE
    assert rule.decide(None, active=True) is Decision.KEEP
    low = ThresholdRule(Kind.LOW_SOC, 20, 25, False, Severity.WARNING, "%")
    assert low.decide(19, active=False) is Decision.OPEN
    assert low.decide(22, active=True) is Decision.KEEP
    assert low.decide(25, active=True) is Decision.CLOSE
    assert "below 20 %" in low.message(19)


def test_settings_refuse_inverted_hysteresis() -> None:
    with pytest.raises(ValueError, match="low_soc"):
        AlarmSettings(low_soc_open=30, low_soc_close=20)


def test_bms_kinds_and_distance() -> None:
    assert bms_kind("cell_overvoltage") == "bms:cell_overvoltage"
    assert bms_kind("battery_full") is None
    assert bms_kind("") is None
    cape_town, johannesburg = (-33.92, 18.42), (-26.20, 28.04)
    assert distance_m(cape_town, johannesburg) == pytest.approx(1_262_000, rel=0.01)
    assert distance_m(cape_town, cape_town) == 0


def _telemetry_batch(at: float, **snapshot_args: object) -> IngestBatch:
    item = snapshot(at=at, **snapshot_args)  # type: ignore[arg-type]
    return IngestBatch(telemetry=[(telemetry(at=at, seq=int(at - T0), snapshots=(item,)), at)])


async def _write_and_evaluate(store: Repository, engine: AlarmEngine, batch: IngestBatch) -> None:
    await store.write_batch(batch)
    await engine.evaluate_batch(batch)


async def _open_kinds(store: Repository) -> set[str]:
    return {alarm.kind for alarm in await store.list_alarms(AlarmFilter(state=AlarmState.OPEN))}


async def test_cell_drift_opens_and_closes_with_hysteresis(sqlite_store: Repository) -> None:
    feed = LiveFeed()
    engine = AlarmEngine(sqlite_store, feed=feed)
    async with feed.subscribe() as live:
        await _write_and_evaluate(sqlite_store, engine, _telemetry_batch(T0, delta=0.02))
        assert await _open_kinds(sqlite_store) == set()
        await _write_and_evaluate(sqlite_store, engine, _telemetry_batch(T0 + 10, delta=0.12))
        assert await _open_kinds(sqlite_store) == {"cell_drift"}
        await _write_and_evaluate(sqlite_store, engine, _telemetry_batch(T0 + 20, delta=0.07))
        assert await _open_kinds(sqlite_store) == {"cell_drift"}  # between the thresholds: stays open
        await _write_and_evaluate(sqlite_store, engine, _telemetry_batch(T0 + 30, delta=0.04))
        assert await _open_kinds(sqlite_store) == set()
        updates = [await live.get() for _ in range(live.pending())]
    assert [(u.kind, u.data["action"]) for u in updates] == [(LiveKind.ALARM, "opened"), (LiveKind.ALARM, "closed")]
    (alarm,) = await sqlite_store.list_alarms()
    assert alarm.battery == "b1"
    assert alarm.value == pytest.approx(0.12)
    assert alarm.closed_by is None
    history = await sqlite_store.alarm_history(alarm.id)
    assert [entry.action for entry in history] == [AlarmAction.OPENED, AlarmAction.CLOSED]


async def test_low_soc_temperature_and_bms_alarms(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store)
    hot = _telemetry_batch(
        T0, soc=10.0, temperature=55.0, alarms=frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.BATTERY_FULL})
    )
    await _write_and_evaluate(sqlite_store, engine, hot)
    assert await _open_kinds(sqlite_store) == {"low_soc", "high_temperature", "bms:cell_overvoltage"}
    severities = {a.kind: a.severity for a in await sqlite_store.list_alarms()}
    assert severities["bms:cell_overvoltage"] is Severity.CRITICAL
    cold = _telemetry_batch(T0 + 10, soc=30.0, temperature=-5.0)
    await _write_and_evaluate(sqlite_store, engine, cold)
    assert await _open_kinds(sqlite_store) == {"low_temperature"}


async def test_a_stale_reading_neither_opens_nor_closes(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store)
    stale = IngestBatch(telemetry=[(telemetry(snapshots=(snapshot(soc=5.0),), stale=True), T0)])
    await _write_and_evaluate(sqlite_store, engine, stale)
    assert await _open_kinds(sqlite_store) == set()


async def test_bms_alarm_events_raise_and_clear(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store)
    raised = IngestBatch(events=[(event(kind=EventKind.ALARM_RAISED, alarm="short_circuit"), T0)])
    await _write_and_evaluate(sqlite_store, engine, raised)
    assert await _open_kinds(sqlite_store) == {"bms:short_circuit"}
    cleared = IngestBatch(events=[(event(seq=2, at=T0 + 1, kind=EventKind.ALARM_CLEARED, alarm="short_circuit"), T0)])
    await _write_and_evaluate(sqlite_store, engine, cleared)
    assert await _open_kinds(sqlite_store) == set()


async def test_gps_lost_and_geofence(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store, settings=AlarmSettings(geofence_radius_m=500))
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(state(), T0)]))
    assert await _open_kinds(sqlite_store) == set()
    lost = state(sent_at=T0 + 1, fix=LocationFix.NONE, lat=None, lon=None)
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(lost, T0 + 1)]))
    assert await _open_kinds(sqlite_store) == {"gps_lost"}
    moved = state(sent_at=T0 + 2, lat=-33.92, lon=18.43)  # ~930 m east
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(moved, T0 + 2)]))
    assert await _open_kinds(sqlite_store) == {"geofence"}
    back = state(sent_at=T0 + 3, lat=-33.92, lon=18.422)  # ~190 m: inside 80 % of the radius
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(back, T0 + 3)]))
    assert await _open_kinds(sqlite_store) == set()


async def test_a_silent_gateway_gets_a_no_data_alarm_until_it_reports(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store, settings=AlarmSettings(no_data_factor=3, no_data_min_s=0))
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(state(interval_s=10), T0)]))
    await engine.check(T0 + 29)
    assert await _open_kinds(sqlite_store) == set()
    await engine.check(T0 + 31)
    assert await _open_kinds(sqlite_store) == {"no_data"}
    await engine.check(T0 + 40)
    assert len(await sqlite_store.list_alarms()) == 1
    await _write_and_evaluate(sqlite_store, engine, _telemetry_batch(T0 + 50))
    assert await _open_kinds(sqlite_store) == set()


async def test_the_last_will_neither_closes_no_data_nor_counts_as_seen(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store, settings=AlarmSettings(no_data_factor=3, no_data_min_s=0))
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(state(interval_s=10), T0)]))
    await engine.check(T0 + 31)
    assert await _open_kinds(sqlite_store) == {"no_data"}
    will = IngestBatch(availability=[("gw-1", Availability.OFFLINE, T0 + 40)])
    await _write_and_evaluate(sqlite_store, engine, will)
    assert await _open_kinds(sqlite_store) == {"no_data"}
    assert (await sqlite_store.get_gateway("gw-1")).last_seen == T0
    online = IngestBatch(availability=[("gw-1", Availability.ONLINE, T0 + 60)])
    await _write_and_evaluate(sqlite_store, engine, online)
    assert await _open_kinds(sqlite_store) == set()
    assert (await sqlite_store.get_gateway("gw-1")).last_seen == T0 + 60


async def test_an_event_is_a_sign_of_life(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store, settings=AlarmSettings(no_data_factor=3, no_data_min_s=0))
    await _write_and_evaluate(sqlite_store, engine, IngestBatch(states=[(state(interval_s=10), T0)]))
    await engine.check(T0 + 31)
    assert await _open_kinds(sqlite_store) == {"no_data"}
    config = IngestBatch(events=[(event(at=T0 + 35, kind=EventKind.CONFIG_APPLIED, alarm=None), T0 + 35)])
    await _write_and_evaluate(sqlite_store, engine, config)
    assert await _open_kinds(sqlite_store) == set()


async def test_stale_measured_location_is_gps_lost(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store, settings=AlarmSettings(location_stale_s=600, no_data_min_s=1e6))
    batch = IngestBatch(states=[(state(), T0)])
    batch.availability.append(("gw-1", Availability.ONLINE, T0))
    await _write_and_evaluate(sqlite_store, engine, batch)
    await engine.check(T0 + 601)
    assert await _open_kinds(sqlite_store) == {"gps_lost"}


async def test_the_engine_runs_from_observed_batches_and_reloads_open_alarms(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store)
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(engine.ready.wait(), 5)
        batch = _telemetry_batch(T0, soc=5.0)
        result = await sqlite_store.write_batch(batch)
        engine.observe(batch, result)
        for _ in range(100):
            if engine.opened:
                break
            await asyncio.sleep(0.02)
        assert engine.opened == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    again = AlarmEngine(sqlite_store)
    task = asyncio.create_task(again.run())
    try:
        await asyncio.wait_for(again.ready.wait(), 5)
        batch = _telemetry_batch(T0 + 10, soc=6.0)
        await sqlite_store.write_batch(batch)
        await again.evaluate_batch(batch)
        assert again.opened == 0  # the open low-SoC alarm was loaded, not opened twice
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_observing_never_blocks_and_drops_the_oldest() -> None:
    engine = AlarmEngine(None, settings=AlarmSettings(queue_limit=2))  # type: ignore[arg-type]
    empty = WriteResult(
        samples_written=0, samples_duplicate=0, events_written=0, events_duplicate=0, snapshots_rejected=0
    )
    for _ in range(5):
        engine.observe(IngestBatch(), empty)
    assert engine.dropped_batches == 3


def _hostile_telemetry_batch(at: float) -> IngestBatch:
    hostile = {"battery_id": "b1", "timestamp": at, "voltage": 10**400}
    message = telemetry(at=at, seq=int(at - T0)).model_copy(
        update={"batteries": [BatteryReading(id="b1", age_s=0, stale=False, snapshot=hostile)]}
    )
    return IngestBatch(telemetry=[(message, at)])


async def test_a_snapshot_number_too_large_for_a_float_is_skipped(sqlite_store: Repository) -> None:
    engine = AlarmEngine(sqlite_store)
    await _write_and_evaluate(sqlite_store, engine, _hostile_telemetry_batch(T0))
    assert engine.opened == 0


class _OnceBrokenStore:
    """Raises a bug (not a StoreError) on the first alarm it is asked to open."""

    def __init__(self, inner: Repository) -> None:
        self.inner = inner
        self.broken = True

    async def open_alarm(self, alarm: NewAlarm) -> tuple[AlarmRecord, bool]:
        if self.broken:
            self.broken = False
            raise RuntimeError("a bug in one evaluation")
        return await self.inner.open_alarm(alarm)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_the_engine_goes_on_after_a_batch_fails_with_a_bug(sqlite_store: Repository) -> None:
    engine = AlarmEngine(_OnceBrokenStore(sqlite_store))  # type: ignore[arg-type]
    task = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(engine.ready.wait(), 5)
        for at in (T0, T0 + 10):
            batch = _telemetry_batch(at, soc=5.0)
            engine.observe(batch, await sqlite_store.write_batch(batch))
        for _ in range(100):
            if engine.opened:
                break
            await asyncio.sleep(0.02)
        assert not task.done()
        assert engine.failed_batches == 1
        assert engine.opened == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

"""The repository contract, run against SQLite and PostgreSQL alike (the ``store`` fixture)."""

from __future__ import annotations

import json
import math

import pytest

from bmsgate.fleet.protocol import LocationFix
from bmsgate.fleet.server.store import Repository
from bmsgate.fleet.server.store.repository import (
    AlarmAction,
    AlarmFilter,
    AlarmState,
    Availability,
    IngestBatch,
    NewAlarm,
    Resolution,
    Severity,
    StoreError,
    UnknownRecord,
)
from tests.fleet.server.store.messages import T0, event, snapshot, state, telemetry


async def _seed(store: Repository, gateway: str = "gw-1") -> None:
    batch = IngestBatch()
    batch.states.append((state(gateway), T0))
    batch.availability.append((gateway, Availability.ONLINE, T0))
    batch.telemetry.append((telemetry(gateway, T0), T0 + 0.2))
    await store.write_batch(batch)


async def test_a_gateway_is_listed_with_its_registry_and_latest_battery(store: Repository) -> None:
    await _seed(store)
    gateways = await store.list_gateways()
    assert [g.id for g in gateways] == ["gw-1"]
    gateway = gateways[0]
    assert gateway.name == "Site gw-1"
    assert gateway.site == "Cape Town"
    assert gateway.tags == ("demo",)
    assert gateway.software_version == "1.2.0"
    assert gateway.packs[0].sha256 == "a" * 64
    assert gateway.online
    assert gateway.last_seen == T0 + 0.2
    assert gateway.interval_s == 10.0
    assert gateway.location is not None
    assert (gateway.location.lat, gateway.location.lon, gateway.location.fix) == (-33.92, 18.42, "3d")
    assert gateway.home == (-33.92, 18.42)
    assert gateway.inverter == {"charge_voltage": 55.2, "charge_current": 100.0}
    battery = gateway.batteries[0]
    assert battery.id == "b1"
    assert battery.name == "Pack b1"
    assert not battery.stale
    assert battery.snapshot == snapshot(at=T0).to_dict()
    assert battery.snapshot is not None
    assert battery.snapshot["cell_delta"] == pytest.approx(0.01)
    assert gateway.open_alarms == 0
    assert gateway.worst_severity is None
    assert await store.get_gateway("gw-1") == gateway
    as_json = json.loads(json.dumps(gateway.to_dict()))
    assert as_json["location"]["lat"] == -33.92
    assert as_json["packs"] == [{"kind": "protocol", "name": "jbd", "version": "3", "sha256": "a" * 64}]
    assert as_json["batteries"][0]["snapshot"] == snapshot(at=T0).to_dict()


async def test_unknown_gateway_and_offline_last_will(store: Repository) -> None:
    with pytest.raises(UnknownRecord):
        await store.get_gateway("nope")
    await _seed(store)
    await store.write_batch(IngestBatch(availability=[("gw-1", Availability.OFFLINE, T0 + 5)]))
    gateway = await store.get_gateway("gw-1")
    assert not gateway.online
    assert gateway.last_seen == T0 + 0.2  # the last will (broker) is no sign of life: the telemetry was


async def test_an_older_state_does_not_overwrite_a_newer_one(store: Repository) -> None:
    await store.write_batch(IngestBatch(states=[(state(sent_at=T0 + 10, software_version="2.0.0"), T0 + 10)]))
    await store.write_batch(IngestBatch(states=[(state(sent_at=T0, software_version="1.0.0"), T0 + 11)]))
    assert (await store.get_gateway("gw-1")).software_version == "2.0.0"


async def test_a_resent_message_is_stored_once(store: Repository) -> None:
    await _seed(store)
    again = IngestBatch(telemetry=[(telemetry(at=T0), T0 + 1), (telemetry(at=T0 + 10, seq=2), T0 + 11)])
    result = await store.write_batch(again)
    assert (result.samples_written, result.samples_duplicate) == (1, 1)
    events = IngestBatch(events=[(event(), T0), (event(), T0)])
    result = await store.write_batch(events)
    assert (result.events_written, result.events_duplicate) == (1, 1)
    series = await store.series("gw-1", "b1", "soc", T0 - 1, T0 + 100, Resolution.RAW)
    assert [point.at for point in series.points] == [T0, T0 + 10]
    assert len(await store.list_events("gw-1")) == 1


async def test_the_largest_sequence_number_the_protocol_allows_is_stored(store: Repository) -> None:
    largest = 2**63 - 1
    batch = IngestBatch(telemetry=[(telemetry(seq=largest), T0)], events=[(event(seq=largest), T0)])
    result = await store.write_batch(batch)
    assert (result.samples_written, result.events_written) == (1, 1)


async def test_a_bad_snapshot_is_counted_and_the_rest_stored(store: Repository) -> None:
    message = telemetry(snapshots=(snapshot("b1"), snapshot("b2")))
    broken = message.batteries[1].model_copy(update={"snapshot": {"battery_id": "b2"}})
    message = message.model_copy(update={"batteries": [message.batteries[0], broken]})
    result = await store.write_batch(IngestBatch(telemetry=[(message, T0)]))
    assert result.snapshots_rejected == 1
    assert result.samples_written == 1
    not_a_number = message.batteries[0].model_copy(
        update={"snapshot": {**(message.batteries[0].snapshot or {}), "voltage": float("nan")}}
    )
    poisoned = message.model_copy(update={"batteries": [not_a_number], "at": T0 + 10})
    result = await store.write_batch(IngestBatch(telemetry=[(poisoned, T0)]))
    assert (result.snapshots_rejected, result.samples_written) == (1, 0)


async def test_a_stale_reading_updates_the_latest_but_adds_no_sample(store: Repository) -> None:
    await _seed(store)
    await store.write_batch(IngestBatch(telemetry=[(telemetry(at=T0 + 10, seq=2, stale=True), T0 + 10)]))
    battery = (await store.get_gateway("gw-1")).batteries[0]
    assert battery.stale
    assert battery.at == T0 + 10
    series = await store.series("gw-1", "b1", "voltage", T0 - 1, T0 + 100, Resolution.RAW)
    assert len(series.points) == 1


async def _samples(store: Repository, count: int, start: float = T0, step: float = 10.0) -> None:
    batch = IngestBatch()
    for index in range(count):
        at = start + index * step
        item = snapshot(at=at, soc=50.0 + index, delta=0.01 + index * 0.001)
        batch.telemetry.append((telemetry(at=at, seq=index, snapshots=(item,)), at))
    await store.write_batch(batch)


async def test_series_raw_minute_and_hour_with_min_avg_max(store: Repository) -> None:
    await _samples(store, 12)  # two minutes of 10 s samples: soc 50..61
    await store.rollup(T0 + 200)
    raw = await store.series("gw-1", "b1", "soc", T0, T0 + 1000, Resolution.RAW)
    assert raw.resolution is Resolution.RAW
    assert [point.avg for point in raw.points] == [50.0 + i for i in range(12)]
    minute = await store.series("gw-1", "b1", "soc", T0 - 3600, T0 + 3600, Resolution.MINUTE)
    buckets = {point.at: point for point in minute.points}
    first = buckets[math.floor(T0 / 60) * 60]
    assert first.count == 6 or first.count + len(buckets) > 1
    total = sum(point.count for point in minute.points)
    assert total == 12
    assert min(point.min for point in minute.points if isinstance(point.min, float)) == 50.0
    assert max(point.max for point in minute.points if isinstance(point.max, float)) == 61.0
    hour = await store.series("gw-1", "b1", "soc", T0 - 7200, T0 + 7200, Resolution.HOUR)
    assert len(hour.points) == 1
    assert hour.points[0].count == 12
    assert hour.points[0].avg == pytest.approx(55.5)
    assert (hour.points[0].min, hour.points[0].max) == (50.0, 61.0)


async def test_a_series_over_its_limit_keeps_the_newest_points_and_says_so(store: Repository) -> None:
    await _samples(store, 12)
    full = await store.series("gw-1", "b1", "soc", T0, T0 + 1000, Resolution.RAW, limit=12)
    assert not full.truncated
    assert full.to_dict()["truncated"] is False
    cut = await store.series("gw-1", "b1", "soc", T0, T0 + 1000, Resolution.RAW, limit=5)
    assert [point.avg for point in cut.points] == [57.0, 58.0, 59.0, 60.0, 61.0]
    assert cut.truncated
    assert cut.to_dict()["truncated"] is True


async def test_cell_voltage_series_per_point_and_per_cell(store: Repository) -> None:
    await _samples(store, 3)
    cells = await store.series("gw-1", "b1", "cell_voltages", T0, T0 + 100, Resolution.RAW)
    assert len(cells.points) == 3
    first = cells.points[0].avg
    assert isinstance(first, tuple)
    assert first == snapshot(at=T0, soc=50.0, delta=0.01).cell_voltages
    assert json.loads(json.dumps(cells.to_dict()))["points"][0]["avg"] == list(first)
    one = await store.series("gw-1", "b1", "cell:16", T0, T0 + 100, Resolution.RAW)
    assert [point.avg for point in one.points] == [p.avg[15] for p in cells.points if isinstance(p.avg, tuple)]
    await store.rollup(T0 + 100)
    hourly = await store.series("gw-1", "b1", "cell_voltages", T0 - 3600, T0 + 3600, Resolution.HOUR)
    point = hourly.points[0]
    assert isinstance(point.max, tuple)
    assert isinstance(point.min, tuple)
    assert isinstance(point.avg, tuple)
    assert len(point.max) == 16
    assert point.max[15] == pytest.approx(3.3 + 0.012)
    assert point.min[15] == pytest.approx(3.3 + 0.010)
    assert point.avg[15] == pytest.approx(3.3 + 0.011)
    assert point.min[0] == point.max[0] == pytest.approx(3.3)


async def test_series_refuses_unknown_fields_and_ranges(store: Repository) -> None:
    with pytest.raises(StoreError, match="unknown series field"):
        await store.series("gw-1", "b1", "voltage; DROP TABLE samples", T0, T0 + 1)
    with pytest.raises(StoreError, match="cell"):
        await store.series("gw-1", "b1", "cell:0", T0, T0 + 1)
    with pytest.raises(StoreError, match="range"):
        await store.series("gw-1", "b1", "soc", T0 + 1, T0)


async def test_auto_resolution_follows_the_span(store: Repository) -> None:
    now = T0
    assert (await store.series("gw-1", "b1", "soc", now - 3600, now)).resolution in (Resolution.RAW, Resolution.MINUTE)
    assert (await store.series("gw-1", "b1", "soc", now - 86400 * 2, now)).resolution is Resolution.MINUTE
    assert (await store.series("gw-1", "b1", "soc", now - 86400 * 30, now)).resolution is Resolution.HOUR


async def test_backfilled_samples_reach_the_rollups(store: Repository) -> None:
    await _samples(store, 6, start=T0 + 7200)
    await store.rollup(T0 + 7300)
    await _samples(store, 6, start=T0)  # two hours late (from a gateway's offline buffer)
    await store.rollup(T0 + 7400)
    hour = await store.series("gw-1", "b1", "soc", T0 - 3600, T0 + 10800, Resolution.HOUR)
    assert sum(point.count for point in hour.points) == 12
    assert len(hour.points) == 2


async def test_retention_drops_raw_but_keeps_rollups(store: Repository) -> None:
    await _samples(store, 6)
    await store.rollup(T0 + 100)
    result = await store.apply_retention(T0 + 15 * 86400)
    assert result.raw == 6
    assert result.minute == 0
    raw = await store.series("gw-1", "b1", "soc", T0 - 1, T0 + 100, Resolution.RAW)
    assert raw.points == ()
    minute = await store.series("gw-1", "b1", "soc", T0 - 60, T0 + 100, Resolution.MINUTE)
    assert sum(point.count for point in minute.points) == 6
    result = await store.apply_retention(T0 + 100 * 86400)
    assert result.minute >= 1


async def test_alarm_lifecycle_and_history(store: Repository) -> None:
    await _seed(store)
    new = NewAlarm(gateway="gw-1", battery="b1", kind="cell_drift", severity=Severity.WARNING, message="drift", at=T0)
    alarm, created = await store.open_alarm(new)
    assert created
    assert alarm.state is AlarmState.OPEN
    again, created = await store.open_alarm(new)
    assert not created
    assert again.id == alarm.id
    gateway = await store.get_gateway("gw-1")
    assert (gateway.open_alarms, gateway.worst_severity) == (1, Severity.WARNING)
    acknowledged = await store.acknowledge_alarm(alarm.id, T0 + 1, by="tech")
    assert acknowledged.state is AlarmState.ACKNOWLEDGED
    assert acknowledged.acknowledged_by == "tech"
    assert [a.id for a in await store.list_alarms(AlarmFilter(state=AlarmState.OPEN))] == [alarm.id]
    assert await store.list_alarms(AlarmFilter(state=AlarmState.OPEN, only_state=True)) == []
    await store.add_alarm_history(alarm.id, T0 + 1.5, AlarmAction.NOTIFIED, detail="webhook")
    closed = await store.close_alarm(alarm.id, T0 + 2)
    assert closed.state is AlarmState.CLOSED
    assert closed.closed_by is None
    assert (await store.close_alarm(alarm.id, T0 + 3)).closed_at == T0 + 2
    history = await store.alarm_history(alarm.id)
    assert [entry.action for entry in history] == [
        AlarmAction.OPENED,
        AlarmAction.ACKNOWLEDGED,
        AlarmAction.NOTIFIED,
        AlarmAction.CLOSED,
    ]
    reopened, created = await store.open_alarm(new)
    assert created
    assert reopened.id != alarm.id
    assert len(await store.list_alarms()) == 2
    assert len(await store.list_alarms(AlarmFilter(state=AlarmState.CLOSED))) == 1
    assert len(await store.list_alarms(AlarmFilter(gateway="other"))) == 0
    assert len(await store.list_alarms(AlarmFilter(since=T0 + 0.5))) == 0
    await store.delete_alarm(alarm.id)
    with pytest.raises(UnknownRecord):
        await store.get_alarm(alarm.id)
    with pytest.raises(UnknownRecord):
        await store.alarm_history(alarm.id)


async def test_deleting_a_gateway_removes_its_data(store: Repository) -> None:
    await _seed(store)
    await _seed(store, "gw-2")
    await store.open_alarm(
        NewAlarm(gateway="gw-1", battery=None, kind="no_data", severity=Severity.CRITICAL, message="x", at=T0)
    )
    await store.delete_gateway("gw-1")
    assert [g.id for g in await store.list_gateways()] == ["gw-2"]
    assert await store.list_alarms() == []
    assert (await store.series("gw-1", "b1", "soc", T0 - 1, T0 + 1, Resolution.RAW)).points == ()
    with pytest.raises(UnknownRecord):
        await store.delete_gateway("gw-1")


async def test_home_position_and_gps_lost(store: Repository) -> None:
    await store.write_batch(IngestBatch(states=[(state(fix=LocationFix.NONE, lat=None, lon=None), T0)]))
    gateway = await store.get_gateway("gw-1")
    assert gateway.home is None
    assert gateway.location is not None
    assert gateway.location.fix == "none"
    await store.write_batch(IngestBatch(states=[(state(sent_at=T0 + 1, lat=-26.2, lon=28.04), T0 + 1)]))
    await store.write_batch(IngestBatch(states=[(state(sent_at=T0 + 2, lat=-29.8, lon=31.0), T0 + 2)]))
    assert (await store.get_gateway("gw-1")).home == (-26.2, 28.04)
    await store.set_home("gw-1", (-29.8, 31.0))
    assert (await store.get_gateway("gw-1")).home == (-29.8, 31.0)
    with pytest.raises(UnknownRecord):
        await store.set_home("nope", None)


async def test_many_gateways_list_in_one_go(store: Repository) -> None:
    batch = IngestBatch()
    for index in range(300):
        gateway = f"gw-{index:04d}"
        batch.states.append((state(gateway), T0))
        batch.telemetry.append((telemetry(gateway), T0))
    await store.write_batch(batch)
    await store.open_alarm(
        NewAlarm(gateway="gw-0007", battery=None, kind="no_data", severity=Severity.CRITICAL, message="x", at=T0)
    )
    gateways = await store.list_gateways()
    assert len(gateways) == 300
    assert all(len(g.batteries) == 1 and g.batteries[0].snapshot for g in gateways)
    assert [g.id for g in gateways if g.open_alarms] == ["gw-0007"]
    assert gateways[7].worst_severity is Severity.CRITICAL

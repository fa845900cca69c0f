"""BatterySnapshot: derived values in one place and the stable JSON form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given

from bmsgate.model import SNAPSHOT_FIELD_KINDS, Alarm, BatterySnapshot, DeviceInfo, FieldKind
from bmsgate.protocols.definition import BOOL_TARGETS, DEVICE_TARGETS, FLOAT_TARGETS, INT_TARGETS, LIST_TARGETS
from tests.strategies import snapshots

REQUIRED_JSON_KEYS = {
    "voltage",
    "current",
    "power",
    "soc",
    "remaining_capacity",
    "full_capacity",
    "cycles",
    "cell_voltages",
    "temperatures",
    "mosfet_temperature",
    "alarms",
    "charge_enabled",
    "discharge_enabled",
    "balancing_cells",
    "device",
}


def _snapshot(**changes: object) -> BatterySnapshot:
    base = BatterySnapshot(
        battery_id="house",
        timestamp=1_700_000_000.0,
        protocol="jbd",
        voltage=53.0,
        current=-10.0,
        soc=55.0,
        remaining_capacity=55.0,
        full_capacity=100.0,
        cycles=7,
        cell_voltages=(3.31, 3.30, 3.35, 3.29),
        temperatures=(20.0, 22.0),
        alarms=frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.BATTERY_FULL}),
        charge_enabled=True,
        discharge_enabled=False,
        balancing_cells=(3,),
        device=DeviceInfo(model="SP04S034", software_version="1.2", production_date=dt.date(2018, 4, 17)),
    )
    return base.replace(**changes)


def test_derived_values() -> None:
    snapshot = _snapshot()
    assert snapshot.power == pytest.approx(-530.0)
    assert snapshot.cell_min is not None and (snapshot.cell_min.voltage, snapshot.cell_min.cell) == (3.29, 4)
    assert snapshot.cell_max is not None and (snapshot.cell_max.voltage, snapshot.cell_max.cell) == (3.35, 3)
    assert snapshot.cell_mean == pytest.approx(3.3125)
    assert snapshot.cell_delta == pytest.approx(0.06)
    assert snapshot.temperature_mean == pytest.approx(21.0)
    assert snapshot.time_to_empty == pytest.approx(55.0 / 10.0 * 3600)
    assert snapshot.time_to_full is None
    assert snapshot.stored_energy == pytest.approx(55.0 * 53.0)
    assert snapshot.protection_active is True


def test_time_to_full_when_charging() -> None:
    snapshot = _snapshot(current=20.0)
    assert snapshot.time_to_full == pytest.approx(45.0 / 20.0 * 3600)
    assert snapshot.time_to_empty is None


def test_idle_current_has_no_runtime() -> None:
    snapshot = _snapshot(current=0.01)
    assert snapshot.time_to_empty is None
    assert snapshot.time_to_full is None


def test_unknown_values_stay_none() -> None:
    snapshot = BatterySnapshot(battery_id="x", timestamp=0.0)
    data = snapshot.to_dict()
    assert data["power"] is None
    assert data["cell_min"] is None
    assert data["mosfet_temperature"] is None
    assert data["charge_enabled"] is None
    assert data["balancing"] is None
    assert snapshot.protection_active is False


def test_json_form_has_the_documented_keys_and_types() -> None:
    data = _snapshot().to_dict()
    assert REQUIRED_JSON_KEYS <= set(data)
    assert data["alarms"] == ["battery_full", "cell_overvoltage"]
    assert data["balancing_cells"] == [3]
    assert data["cell_min_number"] == 4
    assert data["device"]["production_date"] == "2018-04-17"
    assert data["device"]["model"] == "SP04S034"
    json.dumps(data)  # serialisable as is


def test_json_round_trip() -> None:
    original = _snapshot()
    assert BatterySnapshot.from_dict(json.loads(json.dumps(original.to_dict()))).to_dict() == original.to_dict()


def test_from_dict_rejects_foreign_data() -> None:
    with pytest.raises(ValueError, match="not a bmsgate snapshot"):
        BatterySnapshot.from_dict({"voltage": 1})
    with pytest.raises(ValueError, match="no_such_alarm"):
        BatterySnapshot.from_dict({"battery_id": "x", "timestamp": 0, "alarms": ["no_such_alarm"]})


def test_snapshot_is_frozen() -> None:
    snapshot = _snapshot()
    with pytest.raises(AttributeError):
        snapshot.voltage = 1.0  # type: ignore[misc]


def test_device_info_merge_keeps_older_knowledge() -> None:
    older = DeviceInfo(model="A", serial_number="123")
    newer = DeviceInfo(software_version="2.0")
    merged = newer.merged_over(older)
    assert (merged.model, merged.serial_number, merged.software_version) == ("A", "123", "2.0")


def test_alarm_vocabulary_is_snake_case() -> None:
    for alarm in Alarm:
        assert alarm.value == alarm.name.lower()
        assert alarm.label[0].isupper()


@given(snapshots)
def test_to_dict_round_trips_without_loss(snapshot: BatterySnapshot) -> None:
    assert BatterySnapshot.from_dict(snapshot.to_dict()) == snapshot


@given(snapshots)
def test_json_text_round_trips_without_loss(snapshot: BatterySnapshot) -> None:
    text = json.dumps(snapshot.to_dict(), allow_nan=False)
    assert BatterySnapshot.from_dict(json.loads(text)) == snapshot


def test_unreported_per_cell_balancing_stays_null() -> None:
    snapshot = _snapshot(balancing_cells=None, balancing=True)
    data = snapshot.to_dict()
    assert data["balancing_cells"] is None
    assert BatterySnapshot.from_dict(data).balancing_cells is None
    assert _snapshot(balancing_cells=()).to_dict()["balancing_cells"] == []


def test_wire_form_is_not_rounded() -> None:
    snapshot = _snapshot(voltage=53.123456789, cell_voltages=(3.123456789,), soc=55.55555)
    data = snapshot.to_dict()
    assert (data["voltage"], data["cell_voltages"], data["soc"]) == (53.123456789, [3.123456789], 55.55555)
    assert data["power"] == 53.123456789 * -10.0


def test_balancing_key_is_the_field_and_the_derived_value_has_its_own_key() -> None:
    data = _snapshot(balancing=None, balancing_cells=(2,)).to_dict()
    assert data["balancing"] is None
    assert data["balancing_active"] is True


def test_from_dict_rejects_wrong_types() -> None:
    base = _snapshot().to_dict()
    for key, bad in [("voltage", "53"), ("charge_enabled", 1), ("cycles", 7.5), ("cell_voltages", [True])]:
        with pytest.raises(ValueError, match=key):
            BatterySnapshot.from_dict({**base, key: bad})


def test_definition_targets_are_derived_from_the_model() -> None:
    assert FLOAT_TARGETS == {name for name, kind in SNAPSHOT_FIELD_KINDS.items() if kind is FieldKind.FLOAT}
    assert {"voltage", "soc", "balance_current"} <= FLOAT_TARGETS
    assert INT_TARGETS == {"cycles"}
    assert BOOL_TARGETS == {"charge_enabled", "discharge_enabled", "balancing", "heating"}
    assert LIST_TARGETS == {"cell_voltages", "temperatures"}
    assert {f"device.{field.name}" for field in dataclasses.fields(DeviceInfo)} == DEVICE_TARGETS


def test_from_dict_refuses_an_unknown_schema_version() -> None:
    data = {"schema": 99, "battery_id": "a", "timestamp": 1.0, "protocol": "p"}
    with pytest.raises(ValueError, match="schema: snapshot JSON version 99"):
        BatterySnapshot.from_dict(data)
    assert BatterySnapshot.from_dict({**data, "schema": 1}).battery_id == "a"

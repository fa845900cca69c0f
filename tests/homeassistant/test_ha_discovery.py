"""Pure discovery builders and entity rows, compared against JSON snapshots in snapshots/.

Regenerate the snapshots after an intended change with ``BMSGATE_UPDATE_SNAPSHOTS=1 pytest tests/homeassistant``
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bmsgate.homeassistant.discovery import (
    DiscoveryContext,
    Registry,
    Topics,
    battery_configs,
    device_identity,
    gateway_configs,
    mac_address,
    slug,
    stale_topics,
)
from bmsgate.homeassistant.energy import EnergyTotals
from bmsgate.homeassistant.entities import (
    CommandResult,
    StateInputs,
    battery_entities,
    build_state,
    encode_inverter_state,
    present_entities,
)
from bmsgate.homeassistant.settings import BatteryInfo, LinkStats, MqttSettings
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo

from .conftest import BATTERY1, snapshot

SNAPSHOTS = Path(__file__).parent / "snapshots"


def assert_snapshot(name: str, data: Any) -> None:
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("BMSGATE_UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), f"{path} differs"


def context(**changes: Any) -> DiscoveryContext:
    settings = MqttSettings.model_validate({"state_dir": "/nonexistent", **changes})
    return DiscoveryContext.from_settings(settings, sw_version="1.2.3")


def full_inputs(snap: BatterySnapshot | None = None, *, control: bool = True) -> StateInputs:
    return StateInputs(
        snapshot=snap or snapshot(timestamp=1_700_000_000.0),
        energy=EnergyTotals(charged_kwh=12.3456, discharged_kwh=11.0),
        link=LinkStats(success_rate=0.95, rssi=-71, last_error=None),
        last_command=None,
        control=control,
    )


def configs_for(ctx: DiscoveryContext, inputs: StateInputs, info: BatteryInfo = BATTERY1) -> dict[str, Any]:
    snap = inputs.snapshot
    return battery_configs(
        ctx,
        info,
        identity=device_identity(info, snap.device),
        device=snap.device,
        rows=present_entities(inputs),
        expire_after=120,
    )


def test_full_battery_configs_match_snapshot() -> None:
    configs = configs_for(context(), full_inputs())
    assert_snapshot("battery_full", configs)
    # every config of the battery carries the same device block, linked to the gateway
    devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
    assert len(devices) == 1
    device = next(iter(configs.values()))["device"]
    assert device["identifiers"] == ["bmsgate_sn_4021234567"]
    assert device["via_device"] == "bmsgate_gateway_bmsgate"
    assert device["connections"] == [["bluetooth", "c8:47:8c:00:11:22"]]
    cell = configs["homeassistant/sensor/bmsgate/battery1_cell_01/config"]
    assert cell["default_entity_id"] == "sensor.bms_battery1_cell_01"
    assert (cell["device_class"], cell["state_class"], cell["unit_of_measurement"]) == ("voltage", "measurement", "V")
    assert cell["suggested_display_precision"] == 3
    energy = configs["homeassistant/sensor/bmsgate/battery1_energy_charged/config"]
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy",
        "total_increasing",
        "kWh",
    )
    switch = configs["homeassistant/switch/bmsgate/battery1_charge_enabled/config"]
    assert switch["command_topic"] == "bmsgate/battery1/charge_enabled/set"
    assert "expire_after" not in switch
    alarm_topics = [t for t in configs if "_alarm_" in t]
    assert len(alarm_topics) == len(Alarm)
    for payload in configs.values():
        assert payload["availability_mode"] == "all"
        assert [a["topic"] for a in payload["availability"]] == ["bmsgate/status", "bmsgate/battery1/availability"]
        assert payload["origin"] == {
            "name": "bmsgate",
            "sw_version": "1.2.3",
            "support_url": "https://github.com/bmsgate/bmsgate",
        }
        assert not payload["name"].startswith("Battery 1")


def test_minimal_battery_legacy_object_id_matches_snapshot() -> None:
    snap = BatterySnapshot(battery_id="Garage Pack", timestamp=1.0, voltage=52.1, current=0.0)
    info = BatteryInfo("Garage Pack", address="/dev/ttyUSB0", protocol="daly")
    inputs = StateInputs(snapshot=snap)
    rows = present_entities(inputs, alarms=[Alarm.CELL_OVERVOLTAGE])
    configs = battery_configs(
        context(entity_id_style="object_id", discovery_prefix="ha", base_topic="home/bms"),
        info,
        identity=device_identity(info, snap.device),
        device=snap.device,
        rows=rows,
        expire_after=None,
    )
    assert_snapshot("battery_minimal_object_id", configs)
    keys = {row.key for row in rows}
    # only what the battery reports (power is derived from voltage and current)
    assert keys == {
        "voltage",
        "current",
        "power",
        "problem",
        "alarm_cell_overvoltage",
    }
    one = configs["ha/sensor/bmsgate/garage_pack_voltage/config"]
    assert one["object_id"] == "bms_garage_pack_voltage"
    assert "default_entity_id" not in one
    assert one["device"]["model"] == "daly BMS"
    assert one["device"]["identifiers"] == ["bmsgate_addr_dev_ttyusb0"]
    assert "connections" not in one["device"]
    assert "expire_after" not in one


def test_gateway_and_inverter_configs_match_snapshot() -> None:
    configs = gateway_configs(context(), inverter=True)
    assert_snapshot("gateway_inverter", configs)
    assert set(configs) == {
        "homeassistant/binary_sensor/bmsgate/gateway_status/config",
        "homeassistant/sensor/bmsgate/inverter_charge_voltage_limit/config",
        "homeassistant/sensor/bmsgate/inverter_charge_current_limit/config",
        "homeassistant/sensor/bmsgate/inverter_discharge_current_limit/config",
        "homeassistant/sensor/bmsgate/inverter_limitation_reason/config",
        "homeassistant/binary_sensor/bmsgate/inverter_bank_stale/config",
    }
    assert set(gateway_configs(context(), inverter=False)) == {
        "homeassistant/binary_sensor/bmsgate/gateway_status/config"
    }


def test_state_message_matches_snapshot() -> None:
    inputs = full_inputs()
    inputs = StateInputs(
        snapshot=inputs.snapshot,
        energy=inputs.energy,
        link=LinkStats(success_rate=0.5, rssi=None, last_error="timeout"),
        last_command=CommandResult("charge=off", "refused", "BMS said no", 1_700_000_001.0),
        control=True,
    )
    rows = present_entities(inputs)
    state = build_state(rows, inputs)
    assert_snapshot("state_full", state)
    assert state["cell_02"] == 3.322
    assert state["charge_enabled"] == "ON"
    assert state["balancing"] == "ON"
    assert state["alarms"] == ["low_soc"]
    assert state["problem"] == "ON"
    assert state["link_quality"] == 50.0
    assert "rssi" not in state  # not reported → no entity → no key
    attrs = state["attrs"]
    assert isinstance(attrs, dict)
    assert attrs["balancing"]["cells"] == [2]
    assert attrs["last_command"]["error"] == "BMS said no"
    assert state["energy_charged"] == 12.3456
    assert "alarm_low_soc" not in state  # alarm rows read the shared list


def test_identity_prefers_serial_then_mac_then_address_then_id() -> None:
    with_serial = DeviceInfo(serial_number="AB-12 34")
    assert device_identity(BATTERY1, with_serial) == "sn_ab_12_34"
    assert device_identity(BATTERY1, DeviceInfo()) == "mac_c8478c001122"
    assert device_identity(BatteryInfo("b", address="COM3"), DeviceInfo()) == "addr_com3"
    assert device_identity(BatteryInfo("My Battery"), DeviceInfo(serial_number="  ")) == "id_my_battery"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("C8:47:8C:00:11:22", "c8:47:8c:00:11:22"),
        ("c8-47-8c-00-11-22", "c8:47:8c:00:11:22"),
        ("c8478c001122", "c8:47:8c:00:11:22"),
        ("C8:47:8C-00:11:22", None),
        ("8F0B2D8E-6B1F-4F0C-9C3E-2B1F0D7A9E11", None),
        (None, None),
    ],
)
def test_mac_address(address: str | None, expected: str | None) -> None:
    assert mac_address(address) == expected


def test_rows_for_alarm_subset_and_counts() -> None:
    rows = battery_entities(cells=16, temperatures=4, alarms=[Alarm.SHORT_CIRCUIT, Alarm.CELL_OVERVOLTAGE])
    keys = [row.key for row in rows]
    assert [k for k in keys if k.startswith("alarm_")] == ["alarm_cell_overvoltage", "alarm_short_circuit"]
    assert keys.count("cell_16") == 1
    assert "temperature_4" in keys
    assert len(keys) == len(set(keys))
    kinds = {row.key: row.component for row in rows}
    assert kinds["charge_enabled"] == "binary_sensor"


def test_no_cells_no_cell_statistics() -> None:
    inputs = StateInputs(snapshot=BatterySnapshot(battery_id="b", timestamp=1.0, soc=50.0))
    keys = {row.key for row in present_entities(inputs, alarms=())}
    assert keys == {"soc", "problem"}


def test_last_command_entity_only_with_control() -> None:
    snap = BatterySnapshot(battery_id="b", timestamp=1.0, charge_enabled=False)
    with_control = {row.key: row for row in present_entities(StateInputs(snapshot=snap, control=True), alarms=())}
    assert with_control["charge_enabled"].component == "switch"
    assert "last_command" in with_control
    without = {row.key for row in present_entities(StateInputs(snapshot=snap), alarms=())}
    assert "last_command" not in without


def test_inverter_state_encoding() -> None:
    state = encode_inverter_state(
        {"charge_voltage_limit": 55.2, "bank_stale": False, "limitation_reason": "cell_high", "extra": None}
    )
    assert state == {"charge_voltage_limit": 55.2, "bank_stale": "OFF", "limitation_reason": "cell_high", "extra": None}


def test_registry_round_trip_and_garbage() -> None:
    registry = Registry(batteries={"b1": frozenset({"t/1", "t/2"})}, gateway=frozenset({"g/1"}))
    decoded = Registry.decode(registry.encode())
    assert decoded == registry
    assert decoded.all_topics() == {"t/1", "t/2", "g/1"}
    assert Registry.decode(b"") is None
    assert Registry.decode(b"[]") is None
    assert Registry.decode(b'{"version": 99}') is None
    assert Registry.decode(b'{"version": 1, "gateway": {}, "batteries": {}}') is None
    assert stale_topics({"a", "b"}, {"b"}) == ["a"]


def test_topics_and_slugs() -> None:
    topics = Topics(base="home/bms", prefix="homeassistant", node_id="gw", ha_status="homeassistant/status")
    assert topics.parse_command("home/bms/battery1/charge_enabled/set") == ("battery1", "charge_enabled")
    assert topics.parse_command("home/bms/battery1/state") is None
    assert topics.parse_command("other/bms/battery1/charge_enabled/set") is None
    assert topics.command_filter == "home/bms/+/+/set"
    assert slug("Battery #1 (Garage)") == "battery_1_garage"
    assert slug("---") == "x"

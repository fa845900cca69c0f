"""The checks before and after a switch: plausibility of a snapshot, preconditions on the hub."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bmsgate.fleet.agent.updates.plausibility import implausibility
from bmsgate.fleet.agent.updates.preconditions import unmet_precondition
from bmsgate.model import Alarm, BatterySnapshot
from bmsgate.runtime.hub import SnapshotHub


def _snapshot(**changes: Any) -> BatterySnapshot:
    fields: dict[str, Any] = {
        "battery_id": "house",
        "timestamp": time.time(),
        "voltage": 13.28,
        "soc": 76.0,
        "cell_voltages": (3.318, 3.322, 3.319, 3.321),
        "temperatures": (21.5, 22.25),
    }
    return BatterySnapshot(**{**fields, **changes})


def test_a_plausible_snapshot_passes_and_a_sparse_one_too() -> None:
    assert implausibility(_snapshot()) is None
    assert implausibility(BatterySnapshot(battery_id="house", timestamp=time.time())) is None
    assert implausibility(_snapshot(voltage=13.6, temperatures=(-39.0, 99.0), soc=100.0)) is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"soc": 101.0}, "soc 101 %"),
        ({"cell_voltages": (3.3, 33.2, 3.3, 3.3), "voltage": 42.9}, "cell 2 at 33.2 V"),
        ({"cell_voltages": (3.3, 3.3, 1.2, 3.3), "voltage": 11.1}, "cell 3 at 1.2 V"),
        ({"temperatures": (21.0, 221.5)}, "temperature 221.5 degC"),
        ({"mosfet_temperature": -60.0}, "temperature -60 degC"),
        ({"voltage": 132.8}, "pack voltage 132.8 V but its cells add up to 13.28 V"),
    ],
)
def test_implausible_values_are_named(changes: dict[str, Any], named: str) -> None:
    problem = implausibility(_snapshot(**changes))
    assert problem is not None
    assert named in problem


def test_preconditions_need_fresh_data_without_alarms() -> None:
    now = [1000.0]
    hub = SnapshotHub(clock=lambda: now[0])
    hub.register("house", stale_after=30.0)
    hub.register("shed", stale_after=30.0)
    assert unmet_precondition(hub, ["house"]) == "battery house: no data yet"
    hub.publish(_snapshot())
    hub.publish(_snapshot(battery_id="shed", alarms=frozenset({Alarm.CELL_UNDERVOLTAGE})))
    assert unmet_precondition(hub, ["house"]) is None
    problem = unmet_precondition(hub, ["house", "shed"])
    assert problem is not None and "shed: active alarms (cell_undervoltage)" in problem
    now[0] += 31
    hub.check_staleness()
    assert unmet_precondition(hub, ["house"]) == "battery house: data is stale (no fresh poll within 30 s)"
    assert unmet_precondition(hub, []) is None

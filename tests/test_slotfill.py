"""`slot_filler`: instances equal to and as frozen as the ones ``__init__`` builds."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo, trusted_snapshot
from bmsgate.slotfill import slot_filler


def test_a_trusted_snapshot_is_the_snapshot_init_builds() -> None:
    values: dict[str, Any] = {
        "battery_id": "b1",
        "timestamp": 12.5,
        "voltage": 52.1,
        "cell_voltages": (3.3, 3.31),
        "alarms": frozenset({Alarm.LOW_SOC}),
        "device": DeviceInfo(model="X"),
        "extras": {"a": 1},
    }
    filled = trusted_snapshot(values)
    built = BatterySnapshot(**values)
    assert type(filled) is BatterySnapshot
    assert filled == built
    assert repr(filled) == repr(built)
    assert pickle.loads(pickle.dumps(filled)) == built
    assert filled.replace(voltage=1.0).voltage == 1.0
    assert filled.soc is None  # a field it was not given has its default
    with pytest.raises(dataclasses.FrozenInstanceError):
        filled.voltage = 1.0  # type: ignore[misc]
    assert trusted_snapshot.__name__ == "trusted_snapshot"


def test_only_slotted_dataclasses_are_filled() -> None:
    @dataclasses.dataclass(frozen=True)
    class Plain:
        value: int = 0

    with pytest.raises(TypeError, match="slotted"):
        slot_filler(Plain, name="fill", doc="")
    with pytest.raises(TypeError, match="slotted"):
        slot_filler(int, name="fill", doc="")

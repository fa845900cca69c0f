"""Bank aggregation: several packs become one virtual battery; stale packs drop out."""

from __future__ import annotations

from typing import Any

import pytest

from bmsgate.inverter.bank import PackInput, aggregate, bank_current_limit, bank_voltage_limit
from bmsgate.model import Alarm, BatterySnapshot


def pack(battery_id: str, **changes: Any) -> BatterySnapshot:
    values: dict[str, Any] = {
        "battery_id": battery_id,
        "timestamp": 0.0,
        "voltage": 53.0,
        "current": 10.0,
        "soc": 50.0,
        "soh": 100.0,
        "remaining_capacity": 50.0,
        "full_capacity": 100.0,
        "cell_voltages": (3.30,) * 16,
        "temperatures": (20.0,),
        "charge_enabled": True,
        "discharge_enabled": True,
    }
    values.update(changes)
    return BatterySnapshot(**values)


def fresh(snapshot: BatterySnapshot, age: float = 1.0) -> PackInput:
    return PackInput(snapshot.battery_id, snapshot, stale=False, age=age)


def stale(snapshot: BatterySnapshot) -> PackInput:
    return PackInput(snapshot.battery_id, snapshot, stale=True, age=999.0)


def test_current_is_summed_and_voltage_averaged() -> None:
    bank = aggregate([fresh(pack("a", current=10.0, voltage=53.0)), fresh(pack("b", current=-4.0, voltage=53.4))])
    assert bank.current == pytest.approx(6.0)
    assert bank.voltage == pytest.approx(53.2)
    assert bank.power == pytest.approx(6.0 * 53.2)
    assert bank.packs_online == bank.pack_count == 2
    assert not bank.stale
    assert not bank.degraded


def test_soc_is_capacity_weighted() -> None:
    bank = aggregate([fresh(pack("a", soc=40.0, full_capacity=100.0)), fresh(pack("b", soc=70.0, full_capacity=200.0))])
    assert bank.soc == pytest.approx((40 * 100 + 70 * 200) / 300)


def test_soc_falls_back_to_equal_weights_without_capacity() -> None:
    bank = aggregate([fresh(pack("a", soc=40.0, full_capacity=None)), fresh(pack("b", soc=60.0, full_capacity=None))])
    assert bank.soc == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("socs", "expected"),
    [((3.0, 60.0), 3.0), ((97.0, 60.0), 97.0), ((2.0, 99.0), 2.0)],
    ids=["near-empty-reports-emptiest", "near-full-reports-fullest", "empty-wins-over-full"],
)
def test_soc_reports_the_extreme_pack_near_the_ends(socs: tuple[float, float], expected: float) -> None:
    bank = aggregate([fresh(pack("a", soc=socs[0])), fresh(pack("b", soc=socs[1]))])
    assert bank.soc == expected


def test_alarms_are_ored_and_extremes_taken() -> None:
    bank = aggregate(
        [
            fresh(pack("a", alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), temperatures=(5.0, 30.0))),
            fresh(pack("b", alarms=frozenset({Alarm.LOW_SOC}), cell_voltages=(3.2, 3.5), temperatures=(18.0,))),
        ]
    )
    assert bank.alarms == {Alarm.CELL_OVERVOLTAGE, Alarm.LOW_SOC}
    assert bank.protection_active
    assert bank.temperature_min == 5.0
    assert bank.temperature_max == 30.0
    assert bank.cell_voltage_min == 3.2
    assert bank.cell_voltage_max == 3.5
    assert bank.cell_delta == pytest.approx(0.3)


def test_fet_flags_require_every_pack() -> None:
    bank = aggregate([fresh(pack("a")), fresh(pack("b", charge_enabled=False))])
    assert bank.charge_enabled is False
    assert bank.discharge_enabled is True


def test_stale_packs_drop_out_of_measurements() -> None:
    bank = aggregate([fresh(pack("a", current=10.0, soc=40.0)), stale(pack("b", current=50.0, soc=90.0))])
    assert bank.current == 10.0
    assert bank.soc == 40.0
    assert bank.packs_online == 1
    assert bank.pack_count == 2
    assert bank.missing_ids == ("b",)
    assert [s.battery_id for s in bank.offline] == ["b"]
    assert bank.degraded
    assert not bank.stale


def test_bank_without_fresh_pack_is_stale() -> None:
    bank = aggregate([stale(pack("a")), PackInput("b", None, stale=True)])
    assert bank.stale
    assert bank.ever_seen
    assert bank.voltage is None
    assert bank.current is None
    assert bank.missing_ids == ("a", "b")
    assert bank.to_dict()["stale"] is True


def test_bank_that_never_reported_is_starting() -> None:
    bank = aggregate([PackInput("a", None, stale=True)])
    assert bank.stale
    assert not bank.ever_seen


def test_unknown_values_stay_unknown() -> None:
    bank = aggregate([fresh(BatterySnapshot(battery_id="a", timestamp=0.0))])
    assert bank.voltage is None
    assert bank.soc is None
    assert bank.temperature_min is None
    assert bank.charge_enabled is None
    assert bank.is_charging is None
    assert bank.stored_energy is None


def test_to_dict_is_json_ready() -> None:
    data = aggregate([fresh(pack("a"))]).to_dict()
    assert data["online_ids"] == ["a"]
    assert data["voltage"] == 53.0
    assert data["max_age"] == 1.0


def test_current_limit_is_min_times_packs_online() -> None:
    assert bank_current_limit([100.0, 40.0], 2) == 80.0
    # A stale pack's last limit restricts without adding capacity.
    assert bank_current_limit([100.0, 40.0], 1) == 40.0
    assert bank_current_limit([], 0) == 0.0
    assert bank_current_limit([-5.0], 1) == 0.0


def test_voltage_limit_is_min_of_known() -> None:
    assert bank_voltage_limit([55.2, None, 54.8]) == 54.8
    assert bank_voltage_limit([None]) is None

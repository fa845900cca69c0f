"""Limit engine: curves, per-pack targets, dynamics, charge voltage state machine, safety properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bmsgate.inverter.bank import BankState, PackInput, aggregate
from bmsgate.inverter.limits import (
    ChargeMode,
    LimitEngine,
    LimitReason,
    LimitSettings,
    TemperatureDerating,
    interpolate,
    pack_targets,
    temperature_derating,
)
from bmsgate.model import Alarm, BatterySnapshot

CELLS = 16


def pack(battery_id: str = "a", **changes: Any) -> BatterySnapshot:
    values: dict[str, Any] = {
        "battery_id": battery_id,
        "timestamp": 0.0,
        "voltage": 52.8,
        "current": 0.0,
        "soc": 50.0,
        "full_capacity": 100.0,
        "cell_voltages": (3.30,) * CELLS,
        "temperatures": (25.0,),
        "mosfet_temperature": 30.0,
        "charge_enabled": True,
        "discharge_enabled": True,
    }
    values.update(changes)
    return BatterySnapshot(**values)


def bank_of(*snapshots: BatterySnapshot, stale_ids: frozenset[str] = frozenset()) -> BankState:
    return aggregate([PackInput(s.battery_id, s, stale=s.battery_id in stale_ids) for s in snapshots])


def stale_bank(*snapshots: BatterySnapshot) -> BankState:
    return bank_of(*snapshots, stale_ids=frozenset(s.battery_id for s in snapshots))


# -- curves -----------------------------------------------------------------------------------------

CURVE = ((0.0, 0.0), (10.0, 100.0), (20.0, 50.0))


@pytest.mark.parametrize(
    ("x", "linear", "stepped"),
    [(-5.0, 0.0, 0.0), (0.0, 0.0, 0.0), (5.0, 50.0, 0.0), (10.0, 100.0, 100.0), (15.0, 75.0, 50.0), (25.0, 50.0, 50.0)],
)
def test_interpolate(x: float, linear: float, stepped: float) -> None:
    assert interpolate(CURVE, x) == pytest.approx(linear)
    assert interpolate(CURVE, x, step=True) == pytest.approx(stepped)


@pytest.mark.parametrize(
    "curve",
    [(), ((1.0, 50.0), (1.0, 60.0)), ((2.0, 50.0), (1.0, 60.0)), ((1.0, 101.0),), ((1.0, -1.0),)],
    ids=["empty", "repeated-x", "decreasing-x", "above-100", "negative"],
)
def test_invalid_curves_are_rejected(curve: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValidationError):
        LimitSettings(charge_temperature_curve=curve)


def test_settings_forbid_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        LimitSettings.model_validate({"max_charge_currnet": 10})


# -- per-pack targets -------------------------------------------------------------------------------


def test_healthy_pack_gets_the_configured_maximum() -> None:
    targets = pack_targets(pack(), LimitSettings())
    assert targets.charge_current == 100.0
    assert targets.charge_reason is LimitReason.NONE
    assert targets.discharge_current == 100.0
    assert targets.bulk_voltage == pytest.approx(CELLS * 3.45)
    assert targets.float_voltage == pytest.approx(CELLS * 3.375)
    assert targets.min_voltage == pytest.approx(CELLS * 2.90)


@pytest.mark.parametrize(
    ("changes", "charge", "discharge", "charge_reason", "discharge_reason"),
    [
        ({"cell_voltages": (3.30,) * 15 + (3.40,)}, 25.0, 100.0, LimitReason.CELL_VOLTAGE, LimitReason.NONE),
        ({"cell_voltages": (3.30,) * 15 + (3.00,)}, 100.0, 5.0, LimitReason.NONE, LimitReason.CELL_VOLTAGE),
        ({"temperatures": (2.0, 25.0)}, 25.0, 35.0, LimitReason.TEMPERATURE, LimitReason.TEMPERATURE),
        ({"temperatures": (25.0, 50.0)}, 25.0, 25.0, LimitReason.TEMPERATURE, LimitReason.TEMPERATURE),
        ({"mosfet_temperature": 80.0}, 25.0, 25.0, LimitReason.MOSFET, LimitReason.MOSFET),
        ({"charge_enabled": False}, 0.0, 100.0, LimitReason.BMS, LimitReason.NONE),
        ({"alarms": frozenset({Alarm.CELL_UNDERVOLTAGE})}, 100.0, 0.0, LimitReason.NONE, LimitReason.BMS),
        ({"alarms": frozenset({Alarm.LOW_SOC})}, 100.0, 100.0, LimitReason.NONE, LimitReason.NONE),
        ({"extras": {"charge_current_limit": 42.0}}, 42.0, 100.0, LimitReason.BMS, LimitReason.NONE),
        ({"temperatures": (), "cell_voltages": (), "mosfet_temperature": None}, 100.0, 100.0, LimitReason.NONE,
         LimitReason.NONE),
    ],
    ids=["high-cell", "low-cell", "cold", "hot", "mosfet", "charge-fet-off", "uv-protection", "informational",
         "bms-limit", "nothing-reported"],
)  # fmt: skip
def test_pack_targets(
    changes: dict[str, Any],
    charge: float,
    discharge: float,
    charge_reason: LimitReason,
    discharge_reason: LimitReason,
) -> None:
    targets = pack_targets(pack(**changes), LimitSettings())
    assert targets.charge_current == pytest.approx(charge)
    assert targets.discharge_current == pytest.approx(discharge)
    assert targets.charge_reason is charge_reason
    assert targets.discharge_reason is discharge_reason


def test_soc_taper_only_when_enabled() -> None:
    full = pack(soc=95.0)
    assert pack_targets(full, LimitSettings()).charge_current == 100.0
    tapered = pack_targets(full, LimitSettings(soc_taper=True))
    assert tapered.charge_current == pytest.approx(20.0)
    assert tapered.charge_reason is LimitReason.SOC


def test_step_mode_uses_the_lower_neighbour() -> None:
    snapshot = pack(cell_voltages=(3.30,) * 15 + (3.39,))
    assert pack_targets(snapshot, LimitSettings()).charge_current == pytest.approx(55.0)
    assert pack_targets(snapshot, LimitSettings(step_mode=True)).charge_current == pytest.approx(25.0)


def test_cell_overvoltage_lowers_the_bulk_voltage() -> None:
    targets = pack_targets(pack(cell_voltages=(3.40,) * 14 + (3.50, 3.55)), LimitSettings())
    assert targets.bulk_voltage == pytest.approx(CELLS * 3.45 - 0.15)
    assert targets.overvoltage_controlled
    clamped = pack_targets(pack(cell_voltages=(4.5,) * CELLS), LimitSettings())
    assert clamped.bulk_voltage == pytest.approx(CELLS * 2.90)


def test_cable_offset_and_configured_cell_count() -> None:
    targets = pack_targets(pack(cell_voltages=()), LimitSettings(cell_count=8, voltage_drop_offset=0.2))
    assert targets.bulk_voltage == pytest.approx(8 * 3.45 + 0.2)
    assert pack_targets(pack(cell_voltages=()), LimitSettings()).bulk_voltage is None


# -- engine dynamics ----------------------------------------------------------------------------------


def test_decreases_apply_at_once_and_rises_ramp() -> None:
    engine = LimitEngine(LimitSettings(ramp_rate=5.0))
    assert engine.update(bank_of(pack()), 0.0).charge_current == 100.0
    hot = engine.update(bank_of(pack(temperatures=(45.0,))), 1.0)
    assert hot.charge_current == pytest.approx(50.0)
    assert hot.charge_reason is LimitReason.TEMPERATURE
    rising = engine.update(bank_of(pack()), 2.0)
    assert rising.charge_current == pytest.approx(55.0)
    assert rising.charge_reason is LimitReason.RECOVERING
    assert engine.update(bank_of(pack()), 100.0).charge_current == 100.0


def test_zero_sticks_then_holds_then_ramps() -> None:
    engine = LimitEngine(LimitSettings(recovery_hold=30.0, ramp_rate=5.0))
    engine.update(bank_of(pack()), 0.0)
    assert engine.update(bank_of(pack(charge_enabled=False)), 1.0).charge_current == 0.0
    # Target back above the 1.5 % threshold: hold for 30 s first.
    assert engine.update(bank_of(pack()), 2.0).charge_current == 0.0
    assert engine.update(bank_of(pack()), 31.9).charge_current == 0.0
    assert engine.update(bank_of(pack()), 32.0).charge_current == pytest.approx(0.5)
    assert engine.update(bank_of(pack()), 33.0).charge_current == pytest.approx(5.5)


def test_target_below_zero_threshold_restarts_the_hold() -> None:
    engine = LimitEngine(LimitSettings(recovery_hold=10.0))
    engine.update(bank_of(pack(charge_enabled=False)), 0.0)
    engine.update(bank_of(pack()), 1.0)
    # 3.45 V cell → 0.5 % of max: below the 1.5 % threshold, the hold starts over.
    engine.update(bank_of(pack(cell_voltages=(3.30,) * 15 + (3.45,))), 5.0)
    assert engine.update(bank_of(pack()), 12.0).charge_current == 0.0
    assert engine.update(bank_of(pack()), 22.0).charge_current > 0.0


def test_hysteresis_ignores_small_rises() -> None:
    engine = LimitEngine(LimitSettings(hysteresis=2.0))
    engine.update(bank_of(pack(extras={"charge_current_limit": 50.0})), 0.0)
    assert engine.update(bank_of(pack(extras={"charge_current_limit": 51.0})), 10.0).charge_current == 50.0
    assert engine.update(bank_of(pack(extras={"charge_current_limit": 60.0})), 20.0).charge_current == 60.0


def test_stale_bank_zeroes_currents_and_holds_voltage() -> None:
    engine = LimitEngine()
    before = engine.update(bank_of(pack()), 0.0)
    limits = engine.update(stale_bank(pack()), 1.0)
    assert limits.stale
    assert limits.charge_current == limits.discharge_current == 0.0
    assert limits.reason is LimitReason.STALE_DATA
    assert limits.charge_voltage == before.charge_voltage
    assert not limits.charge_allowed
    # Fresh again: the zero limits hold before ramping.
    assert engine.update(bank_of(pack()), 2.0).charge_current == 0.0


def test_start_up_without_data_is_not_a_fault() -> None:
    engine = LimitEngine()
    limits = engine.update(aggregate([PackInput("a", None, stale=True)]), 0.0)
    assert limits.reason is LimitReason.NO_DATA
    assert limits.charge_voltage is None
    # The first reading applies directly: no recovery hold after a normal start.
    assert engine.update(bank_of(pack()), 1.0).charge_current == 100.0


def test_packs_scale_the_bank_limit() -> None:
    engine = LimitEngine()
    limits = engine.update(bank_of(pack("a"), pack("b", temperatures=(45.0,))), 0.0)
    assert limits.charge_current == pytest.approx(100.0)  # min(100, 50) x 2
    assert limits.max_charge_current == 200.0
    assert limits.charge_reason is LimitReason.TEMPERATURE


def test_stale_pack_lowers_capacity_and_keeps_its_restriction() -> None:
    engine = LimitEngine()
    engine.update(bank_of(pack("a"), pack("b", temperatures=(45.0,))), 0.0)
    limits = engine.update(bank_of(pack("a"), pack("b", temperatures=(45.0,)), stale_ids=frozenset({"b"})), 1.0)
    assert limits.charge_current == pytest.approx(50.0)
    assert not limits.stale


def test_only_stale_packs_limit_reason_is_stale_data() -> None:
    engine = LimitEngine()
    limits = engine.update(bank_of(pack("a"), pack("b"), stale_ids=frozenset({"b"})), 0.0)
    assert limits.charge_current == 100.0
    assert limits.charge_reason is LimitReason.STALE_DATA
    assert limits.to_dict()["reason"] == "stale data"


def full_pack(**changes: Any) -> BatterySnapshot:
    values: dict[str, Any] = {"voltage": CELLS * 3.45, "soc": 100.0, "cell_voltages": (3.45,) * CELLS}
    return pack(**(values | changes))


def test_bulk_to_float_after_the_absorption_time_then_ramps_down() -> None:
    engine = LimitEngine(LimitSettings(float_after=900.0, float_ramp_rate=0.001))
    assert engine.update(bank_of(full_pack()), 0.0).charge_mode is ChargeMode.BULK
    assert engine.update(bank_of(full_pack()), 899.0).charge_mode is ChargeMode.BULK
    limits = engine.update(bank_of(full_pack()), 900.0)
    assert limits.charge_mode is ChargeMode.FLOAT
    assert limits.voltage_reason is LimitReason.FLOAT
    ramped = engine.update(bank_of(full_pack()), 1000.0)
    assert ramped.charge_voltage == pytest.approx(CELLS * 3.45 - 0.101)  # 1 mV/s since t=899
    settled = engine.update(bank_of(full_pack()), 5000.0)
    assert settled.charge_voltage == pytest.approx(CELLS * 3.375)


def test_float_timer_resets_when_unbalanced() -> None:
    engine = LimitEngine(LimitSettings(float_after=100.0))
    engine.update(bank_of(full_pack()), 0.0)
    engine.update(bank_of(full_pack(cell_voltages=(3.45,) * 15 + (3.43,))), 50.0)
    assert engine.update(bank_of(full_pack()), 120.0).charge_mode is ChargeMode.BULK
    assert engine.update(bank_of(full_pack()), 220.0).charge_mode is ChargeMode.FLOAT


def test_float_returns_to_bulk_on_low_soc() -> None:
    engine = LimitEngine(LimitSettings(float_after=0.0))
    assert engine.update(bank_of(full_pack()), 0.0).charge_mode is ChargeMode.FLOAT
    back = engine.update(bank_of(pack(soc=70.0)), 10.0)
    assert back.charge_mode is ChargeMode.BULK
    # Rising back to bulk is rate-limited.
    assert back.charge_voltage is not None
    assert back.charge_voltage < CELLS * 3.45


def test_overvoltage_cuts_the_voltage_at_once() -> None:
    engine = LimitEngine()
    engine.update(bank_of(pack()), 0.0)
    limits = engine.update(bank_of(pack(cell_voltages=(3.30,) * 15 + (3.60,))), 1.0)
    assert limits.charge_voltage == pytest.approx(CELLS * 3.45 - 0.15)
    assert limits.voltage_reason is LimitReason.CELL_VOLTAGE


# -- properties ----------------------------------------------------------------------------------------

optional_temperature = st.one_of(st.none(), st.floats(-30, 100))
snapshots = st.builds(
    pack,
    battery_id=st.sampled_from(["a", "b", "c"]),
    soc=st.one_of(st.none(), st.floats(0, 100)),
    cell_voltages=st.lists(st.floats(2.5, 3.8), min_size=0, max_size=16).map(tuple),
    temperatures=st.lists(st.floats(-30, 80), max_size=4).map(tuple),
    mosfet_temperature=optional_temperature,
    charge_enabled=st.one_of(st.none(), st.booleans()),
    discharge_enabled=st.one_of(st.none(), st.booleans()),
    alarms=st.frozensets(st.sampled_from(list(Alarm)), max_size=3),
    extras=st.one_of(st.just({}), st.fixed_dictionaries({"charge_current_limit": st.floats(-10, 500)})),
)
limit_settings = st.builds(
    LimitSettings,
    max_charge_current=st.floats(0, 300),
    max_discharge_current=st.floats(0, 300),
    step_mode=st.booleans(),
    soc_taper=st.booleans(),
    hysteresis=st.floats(0, 5),
    recovery_hold=st.floats(0, 60),
)
steps = st.lists(
    st.tuples(st.lists(snapshots, min_size=1, max_size=3), st.frozensets(st.sampled_from(["a", "b", "c"])),
              st.floats(0, 50)),
    min_size=1,
    max_size=12,
)  # fmt: skip


def unique(packs: list[BatterySnapshot]) -> list[BatterySnapshot]:
    return list({snapshot.battery_id: snapshot for snapshot in packs}.values())


def run(engine: LimitEngine, history: list[tuple[list[BatterySnapshot], frozenset[str], float]]) -> float:
    now = 0.0
    for packs, stale_ids, dt in history:
        now += dt
        engine.update(bank_of(*unique(packs), stale_ids=stale_ids), now)
    return now


@settings(max_examples=150, deadline=None)
@given(limit_settings, steps)
def test_limits_never_exceed_the_configured_maxima(config: LimitSettings, history: Any) -> None:
    engine = LimitEngine(config)
    now = 0.0
    for packs, stale_ids, dt in history:
        now += dt
        bank = bank_of(*unique(packs), stale_ids=stale_ids)
        limits = engine.update(bank, now)
        assert 0.0 <= limits.charge_current <= config.max_charge_current * bank.packs_online + 1e-9
        assert 0.0 <= limits.discharge_current <= config.max_discharge_current * bank.packs_online + 1e-9
        assert limits.charge_current <= limits.max_charge_current + 1e-9
        if limits.charge_voltage is not None and limits.max_voltage is not None:
            assert limits.charge_voltage <= limits.max_voltage + 1e-9


@settings(max_examples=150, deadline=None)
@given(limit_settings, steps, st.floats(0, 50))
def test_limits_never_rise_when_everything_goes_stale(config: LimitSettings, history: Any, dt: float) -> None:
    engine = LimitEngine(config)
    now = run(engine, history)
    before = engine.last
    assert before is not None
    packs = unique(history[-1][0])
    after = engine.update(stale_bank(*packs), now + dt)
    assert after.charge_current == after.discharge_current == 0.0
    if before.charge_voltage is None:
        assert after.charge_voltage is None
    else:
        assert after.charge_voltage is not None
        assert after.charge_voltage <= before.charge_voltage


@settings(max_examples=150, deadline=None)
@given(limit_settings, steps, st.floats(0, 50), st.sampled_from(["a", "b", "c"]))
def test_a_pack_going_stale_never_raises_a_limit(config: LimitSettings, history: Any, dt: float, victim: str) -> None:
    engine = LimitEngine(config)
    now = run(engine, history)
    packs = unique(history[-1][0])
    stale_ids = history[-1][1]
    with_pack = copy.deepcopy(engine).update(bank_of(*packs, stale_ids=stale_ids), now + dt)
    without = engine.update(bank_of(*packs, stale_ids=stale_ids | {victim}), now + dt)
    assert without.charge_current <= with_pack.charge_current + 1e-9
    assert without.discharge_current <= with_pack.discharge_current + 1e-9
    if without.charge_voltage is not None and with_pack.charge_voltage is not None:
        assert without.charge_voltage <= with_pack.charge_voltage + 1e-9


@settings(max_examples=200, deadline=None)
@given(snapshots, limit_settings, st.floats(2.5, 3.8), st.floats(0.0, 0.5))
def test_higher_max_cell_never_raises_ccl(
    snapshot: BatterySnapshot, config: LimitSettings, cell: float, bump: float
) -> None:
    low = snapshot.replace(cell_voltages=(3.2, cell))
    high = snapshot.replace(cell_voltages=(3.2, cell + bump))
    assert pack_targets(high, config).charge_current <= pack_targets(low, config).charge_current + 1e-9
    assert (
        LimitEngine(config).update(bank_of(high), 0.0).charge_current
        <= LimitEngine(config).update(bank_of(low), 0.0).charge_current + 1e-9
    )


@settings(max_examples=200, deadline=None)
@given(snapshots, limit_settings, st.floats(2.5, 3.8), st.floats(0.0, 0.5))
def test_lower_min_cell_never_raises_dcl(
    snapshot: BatterySnapshot, config: LimitSettings, cell: float, drop: float
) -> None:
    high = snapshot.replace(cell_voltages=(3.4, cell))
    low = snapshot.replace(cell_voltages=(3.4, cell - drop))
    assert pack_targets(low, config).discharge_current <= pack_targets(high, config).discharge_current + 1e-9


@settings(max_examples=200, deadline=None)
@given(snapshots, limit_settings, st.floats(40, 120), st.floats(0, 30))
def test_hotter_never_raises_either_limit(
    snapshot: BatterySnapshot, config: LimitSettings, temp: float, bump: float
) -> None:
    cool = pack_targets(snapshot.replace(mosfet_temperature=temp, temperatures=(temp,)), config)
    hot = pack_targets(snapshot.replace(mosfet_temperature=temp + bump, temperatures=(temp + bump,)), config)
    assert hot.charge_current <= cool.charge_current + 1e-9
    assert hot.discharge_current <= cool.discharge_current + 1e-9


@settings(max_examples=100, deadline=None)
@given(snapshots, limit_settings, st.sampled_from(sorted(Alarm)))
def test_an_added_alarm_never_raises_a_limit(snapshot: BatterySnapshot, config: LimitSettings, alarm: Alarm) -> None:
    before = pack_targets(snapshot, config)
    after = pack_targets(snapshot.replace(alarms=snapshot.alarms | {alarm}), config)
    assert after.charge_current <= before.charge_current
    assert after.discharge_current <= before.discharge_current


@pytest.mark.parametrize(
    ("temperatures", "expected"),
    [
        ((20.0, 34.0), TemperatureDerating()),
        ((3.0, 20.0), TemperatureDerating(charge_cold=True, discharge_cold=True)),
        ((-5.0, 20.0), TemperatureDerating(charge_cold=True, discharge_cold=True)),
        ((20.0, 47.0), TemperatureDerating(charge_hot=True, discharge_hot=True)),
        ((3.0, 47.0), TemperatureDerating(charge_cold=True, charge_hot=True, discharge_cold=True, discharge_hot=True)),
    ],
)
def test_temperature_derating_names_the_end_that_derates(
    temperatures: tuple[float, float], expected: TemperatureDerating
) -> None:
    derating = temperature_derating(bank_of(pack(temperatures=temperatures)), LimitSettings())
    assert derating == expected
    assert derating.cold is (expected.charge_cold or expected.discharge_cold)
    assert derating.hot is (expected.charge_hot or expected.discharge_hot)


def test_temperature_derating_ignores_stale_banks_and_flat_ends() -> None:
    assert temperature_derating(stale_bank(pack(temperatures=(-20.0, 60.0))), LimitSettings()) == TemperatureDerating()
    flat = LimitSettings(charge_temperature_curve=((10.0, 100.0),), discharge_temperature_curve=((10.0, 100.0),))
    assert temperature_derating(bank_of(pack(temperatures=(-20.0, 60.0))), flat) == TemperatureDerating()


def test_no_charge_current_without_a_charge_voltage() -> None:
    # A pack that reports no cells gives no CVL; the old engine still allowed the full charge current,
    # which an inverter (Growatt: CVL 0 V, CCL 100 A) would act on.
    engine = LimitEngine(LimitSettings())
    limits = engine.update(bank_of(pack(cell_voltages=())), now=0.0)
    assert limits.charge_voltage is None
    assert limits.charge_current == 0.0
    assert limits.charge_reason is LimitReason.NO_DATA
    assert limits.discharge_current > 0.0


def test_cells_that_stop_reporting_mid_run_stop_the_charge_current() -> None:
    engine = LimitEngine(LimitSettings())
    for second in range(200):
        limits = engine.update(bank_of(pack()), now=float(second))
    assert limits.charge_current > 0.0
    for second in range(200, 260):
        limits = engine.update(bank_of(pack(cell_voltages=())), now=float(second))
    assert limits.charge_current == 0.0
    assert limits.charge_reason is LimitReason.NO_DATA


def test_a_temperature_that_goes_missing_never_raises_the_charge_limit() -> None:
    engine = LimitEngine()
    cold = engine.update(bank_of(pack(temperatures=(-5.0,))), 0.0)
    assert cold.charge_current == 0.0
    assert cold.charge_reason is LimitReason.TEMPERATURE
    # The sensor drops out (an absent marker, a frame that did not come): still no charging.
    blind = engine.update(bank_of(pack(temperatures=())), 60.0)
    assert blind.charge_current == 0.0
    assert blind.charge_reason is LimitReason.NO_DATA
    # Back, and warm: the limit rises again (after the usual recovery wait and ramp).
    warm = engine.update(bank_of(pack(temperatures=(25.0,))), 600.0)
    assert warm.charge_reason is not LimitReason.NO_DATA
    for now in range(610, 1800, 10):
        warm = engine.update(bank_of(pack(temperatures=(25.0,))), float(now))
    assert warm.charge_current > 0.0


def test_cells_that_go_missing_hold_a_derated_discharge_limit() -> None:
    engine = LimitEngine()
    low = engine.update(bank_of(pack(cell_voltages=(2.9,) * CELLS)), 0.0)
    assert low.discharge_current < LimitSettings().max_discharge_current
    held = engine.update(bank_of(pack(cell_voltages=(), voltage=46.4)), 60.0)
    assert held.discharge_current <= low.discharge_current
    assert held.discharge_reason is LimitReason.NO_DATA


def test_a_family_that_never_reports_temperatures_is_not_held() -> None:
    engine = LimitEngine()
    first = engine.update(bank_of(pack(temperatures=(), mosfet_temperature=None)), 0.0)
    second = engine.update(bank_of(pack(temperatures=(), mosfet_temperature=None)), 600.0)
    assert second.charge_reason is not LimitReason.NO_DATA
    assert second.charge_current >= first.charge_current

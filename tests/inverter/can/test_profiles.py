"""Profiles and DBC files: every signal's value and scaling per profile, quirks, alarms, validation."""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any

import cantools
import pytest

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import DefinitionError
from bmsgate.inverter.can.dbc import DbcMessage
from bmsgate.inverter.can.profiles import (
    CanFrame,
    HeldMeasurements,
    OutputPhase,
    Requests,
    build_frames,
    decode_frames,
    hold_missing,
    load_profile,
    wire_values,
)
from bmsgate.inverter.limits import LimitReason, LimitSettings
from bmsgate.model import Alarm

from .helpers import make_snapshot, make_status

DATA = importlib.resources.files("bmsgate").joinpath("data/can")
SHIPPED_DBC = sorted(entry.name for entry in DATA.iterdir() if entry.name.endswith(".dbc"))

# What the healthy pack of helpers.make_snapshot() must look like on the wire, in physical units.
EXPECTED: dict[str, float] = {
    "charge_voltage_limit": 55.2,  # 16 × 3.45 V
    "charge_current_limit": 100.0,
    "discharge_current_limit": 100.0,
    "discharge_voltage_limit": 46.4,  # 16 × 2.90 V
    "soc": 50.0,
    "soc_high_resolution": 50.0,
    "soh": 98.0,
    "voltage": 52.8,
    "current": -12.3,
    "temperature": 21.0,
    "temperature_min": 20.0,
    "temperature_max": 22.0,
    "cell_voltage_min": 3.30,
    "cell_voltage_max": 3.31,
    "cell_delta": 0.01,
    "remaining_capacity": 50.0,
    "full_capacity": 100.0,
    "cycles": 42.0,
    "packs_online": 1.0,
    "charge_enable": 1.0,
    "discharge_enable": 1.0,
    "force_charge_1": 0.0,
    "force_charge_2": 0.0,
    "full_charge_request": 0.0,
    "marker_p": ord("P"),
    "marker_n": ord("N"),
    "chemistry": 0x494C,
    "bms_version": 0x0100,
    # Growatt Rev_04 extras
    "state": 3.0,  # discharging
    "sp_state": 3.0,
    "error_flag": 0.0,
    "pack_number": 1.0,
    "manufacturer_code": 0.0,
    "cell_count": 16.0,
    "unsafe_use": 0.0,
    "cell_voltage_max_number": 16.0,
    "cell_voltage_min_number": 1.0,
    "protecting_pack": 0.0,
    "hardware_revision": 1.0,
    "software_version": 1.0,
    "date_year": 2000.0,
    "date_month": 0.0,
    "date_day": 0.0,
    "date_hour": 0.0,
    "date_minute": 0.0,
    "date_second": 0.0,
    "update_status": 0.0,
    **{f"cell_voltage_{n}": 3.30 for n in range(1, 16)},
    "cell_voltage_16": 3.31,
    # SMA: no events; the manufacturer id is not ours, so "invalid"
    "events": 0.0,
    "manufacturer_id": 0xFFFF,
}
DLC = {
    "pylon": {0x351: 6, 0x355: 4, 0x356: 6, 0x359: 7, 0x35C: 2, 0x35E: 8},
    "solark": dict.fromkeys((0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E, 0x379), 8),
    "sma": {0x351: 8, 0x355: 6, 0x356: 6, 0x35A: 8, 0x35B: 8, 0x35C: 2, 0x35E: 8, 0x35F: 8, 0x373: 8},
    "growatt-lv": dict.fromkeys((0x311, 0x312, 0x313, 0x314, 0x315, 0x316, 0x317, 0x318, 0x319, 0x320, 0x321), 8),
}


def by_id(frames: list[CanFrame]) -> dict[int, bytes]:
    return {frame.arbitration_id: frame.data for frame in frames}


@pytest.mark.parametrize("filename", SHIPPED_DBC)
def test_every_shipped_dbc_loads_in_strict_mode(filename: str) -> None:
    with importlib.resources.as_file(DATA.joinpath(filename)) as path:
        database = cantools.database.load_file(path, strict=True)
    assert isinstance(database, cantools.database.can.Database)
    assert database.messages


def test_builtin_profiles() -> None:
    assert default_catalog().names(Kind.CAN_PROFILE) == [
        "deye",
        "goodwe-lv",
        "growatt-lv",
        "luxpower",
        "pylon",
        "pylon-v13",
        "schneider",
        "sma",
        "sofar",
        "solark",
        "solis-lv",
        "victron",
    ]


@pytest.mark.parametrize("name", ["pylon", "solark", "sma", "growatt-lv"])
def test_every_signal_value_and_scale(name: str) -> None:
    profile = load_profile(name)
    frames = build_frames(profile, make_status(), OutputPhase.NORMAL)
    assert [f.arbitration_id for f in frames] == list(profile.frame_ids)
    assert {f.arbitration_id: len(f.data) for f in frames} == DLC[name]
    manufacturer = profile.manufacturer
    for frame_id, signals in decode_frames(profile, frames).items():
        layout = profile.database.message(frame_id)
        for signal in layout.signals:
            value = signals[signal.name]
            if signal.name.startswith("manufacturer_") and signal.name[-1].isdigit():
                expected = float(ord(manufacturer[int(signal.name[-1])]))
            elif signal.name.startswith(("protect_", "warn_")):
                expected = 0.0 if signal.length == 1 else 2.0  # SMA pairs: "10" = cleared
            else:
                expected = EXPECTED[signal.name]
            assert value == pytest.approx(expected, abs=abs(signal.scale) / 2 + 1e-9), (
                name,
                hex(frame_id),
                signal.name,
            )


def test_pylon_bytes() -> None:
    frames = by_id(build_frames(load_profile("pylon"), make_status(), OutputPhase.NORMAL))
    assert frames[0x351] == bytes.fromhex("2802E803E803")  # 55.2 V, 100.0 A, 100.0 A
    assert frames[0x355] == bytes.fromhex("32006200")  # 50 %, 98 %
    assert frames[0x356] == bytes.fromhex("A01485FFD200")  # 52.80 V, -12.3 A, 21.0 °C
    assert frames[0x359] == bytes.fromhex("0000000001504E")
    assert frames[0x35C] == bytes.fromhex("C000")
    assert frames[0x35E] == b"PYLON   "


def test_solark_voltage_in_tenths_and_capacity_frame() -> None:
    frames = by_id(build_frames(load_profile("solark"), make_status(), OutputPhase.NORMAL))
    assert frames[0x356][:2] == (528).to_bytes(2, "little")
    assert frames[0x351][6:8] == (464).to_bytes(2, "little")
    assert frames[0x379][:2] == (100).to_bytes(2, "little")


def test_growatt_is_big_endian() -> None:
    frames = by_id(build_frames(load_profile("growatt-lv"), make_status(), OutputPhase.NORMAL))
    assert frames[0x311][:6] == bytes.fromhex("022803E803E8")
    assert frames[0x313] == bytes.fromhex("14A0FF8500DC3262")  # 52.80 V, -12.3 A, 22.0 °C, 50 %, 98 %
    assert frames[0x314][:4] == bytes.fromhex("13882710")  # 50.00 Ah, 100.00 Ah in 10 mAh


@pytest.mark.parametrize(
    ("alarm", "protection_bit", "warning_bit"),
    [
        (Alarm.CELL_OVERVOLTAGE, (0, 1), (2, 1)),
        (Alarm.PACK_UNDERVOLTAGE, (0, 2), (2, 2)),
        (Alarm.BATTERY_OVERTEMPERATURE, (0, 3), (2, 3)),
        (Alarm.CHARGE_UNDERTEMPERATURE, (0, 4), (2, 4)),
        (Alarm.DISCHARGE_OVERCURRENT, (0, 7), (2, 7)),
        (Alarm.CHARGE_OVERCURRENT, (1, 0), (3, 0)),
        (Alarm.FRONT_END_FAULT, (1, 3), None),
        (Alarm.INTERNAL_COMMUNICATION_FAULT, (1, 3), (3, 3)),
    ],
)
def test_alarms_map_onto_0x359(
    alarm: Alarm, protection_bit: tuple[int, int], warning_bit: tuple[int, int] | None
) -> None:
    frames = by_id(
        build_frames(load_profile("pylon"), make_status(make_snapshot(alarms=frozenset({alarm}))), OutputPhase.NORMAL)
    )
    data = frames[0x359]
    byte, bit = protection_bit
    assert data[byte] >> bit & 1
    if warning_bit is not None:
        assert data[warning_bit[0]] >> warning_bit[1] & 1


def test_sma_two_bit_alarms_and_invalid_markers() -> None:
    profile = load_profile("sma")
    status = make_status(make_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), soh=None))
    frames = by_id(build_frames(profile, status, OutputPhase.NORMAL))
    alarms = frames[0x35A]
    assert alarms[0] & 0b11 == 0b01  # general: raised
    assert alarms[0] >> 2 & 0b11 == 0b01  # high voltage: raised
    assert alarms[0] >> 4 & 0b11 == 0b10  # low voltage: cleared
    assert alarms[2] >> 2 & 0b11 == 0b00  # contactor: not applicable, "ignored"
    assert frames[0x355][2:4] == b"\xff\xff"  # SoH unknown → invalid
    safe = by_id(build_frames(profile, make_status(stale=True), OutputPhase.SAFE))
    assert safe[0x356][2:4] == (0x8000).to_bytes(2, "little")  # current unknown while stale → invalid
    assert safe[0x35A][2] >> 6 & 0b11 == 0b01  # "BMS internal" raised
    assert safe[0x351][2:6] == bytes(4)


def test_requests_and_force_charge() -> None:
    profile = load_profile("pylon")
    status = make_status(make_snapshot(soc=3.0))
    frames = by_id(
        build_frames(profile, status, OutputPhase.NORMAL, Requests(force_charge_1=True, force_charge_2=True))
    )
    assert frames[0x35C][0] == 0xC0 | 0x20 | 0x10
    blocked = make_status(make_snapshot(soc=3.0, charge_enabled=False))
    frames = by_id(build_frames(profile, blocked, OutputPhase.NORMAL, Requests(force_charge_1=True)))
    assert frames[0x35C][0] == 0x40  # no charge request when charging is not allowed


def test_safe_frames_zero_limits_clear_enables_and_flag_errors() -> None:
    profile = load_profile("pylon")
    frames = by_id(build_frames(profile, make_status(stale=True), OutputPhase.SAFE))
    assert frames[0x351][2:6] == bytes(4)
    assert frames[0x35C][0] == 0x00
    assert frames[0x359][1] >> 3 & 1  # system error
    assert frames[0x359][3] >> 3 & 1  # internal communication fail
    assert frames[0x359][4] == 0  # no pack online
    cvl = int.from_bytes(frames[0x351][:2], "little") / 10
    assert cvl == pytest.approx(52.8)  # Victron quirk: held at the last pack voltage, never 0
    assert build_frames(profile, make_status(stale=True), OutputPhase.SILENT) == []
    assert build_frames(profile, make_status(stale=True), OutputPhase.WAITING) == []


def test_stop_charge_lowers_cvl_to_pack_voltage_never_zero() -> None:
    profile = load_profile("pylon")
    status = make_status(make_snapshot(voltage=52.83, charge_enabled=False))
    values = wire_values(profile, status, OutputPhase.NORMAL, Requests())
    assert values["charge_current_limit"] == 0.0
    assert values["charge_voltage_limit"] == pytest.approx(52.9)  # rounded up to 0.1 V: never below the pack
    plain = profile.with_overrides(quirks={"stop_charge_with_cvl": False})
    assert wire_values(plain, status, OutputPhase.NORMAL, Requests())["charge_voltage_limit"] == pytest.approx(55.2)
    no_cells = make_status(make_snapshot(cell_voltages=()))
    assert wire_values(profile, no_cells, OutputPhase.NORMAL, Requests())["charge_voltage_limit"] == pytest.approx(52.8)


def test_soc_forcing_quirk() -> None:
    profile = load_profile("pylon").with_overrides(quirks={"soc_forcing": True})
    stop_charge = make_status(make_snapshot(charge_enabled=False))
    stop_discharge = make_status(make_snapshot(discharge_enabled=False))
    both = make_status(make_snapshot(charge_enabled=False, discharge_enabled=False))
    assert wire_values(profile, stop_charge, OutputPhase.NORMAL, Requests())["soc"] == 100.0
    assert wire_values(profile, stop_discharge, OutputPhase.NORMAL, Requests())["soc"] == 0.0
    assert wire_values(profile, both, OutputPhase.NORMAL, Requests())["soc"] == 50.0
    assert wire_values(profile, make_status(), OutputPhase.NORMAL, Requests())["soc"] == 50.0
    assert wire_values(load_profile("pylon"), stop_charge, OutputPhase.NORMAL, Requests())["soc"] == 50.0


def test_warnings_follow_derating() -> None:
    profile = load_profile("pylon")
    hot_cell = make_status(make_snapshot(cell_voltages=(3.30,) * 15 + (3.44,)))
    frames = by_id(build_frames(profile, hot_cell, OutputPhase.NORMAL))
    assert frames[0x359][2] >> 1 & 1  # high voltage warning while CCL is cut by cell voltage
    assert not frames[0x359][0] >> 1 & 1  # no protection
    two = make_status(make_snapshot("a"), make_snapshot("b"))
    assert by_id(build_frames(profile, two, OutputPhase.NORMAL))[0x359][4] == 2


def test_manufacturer_override_and_values_clamped() -> None:
    profile = load_profile("pylon").with_overrides(manufacturer="BMSGATE")
    status = make_status(make_snapshot(current=-5000.0))
    frames = by_id(build_frames(profile, status, OutputPhase.NORMAL))
    assert frames[0x35E] == b"BMSGATE "
    assert int.from_bytes(frames[0x356][2:4], "little", signed=True) == -32768
    with pytest.raises(ValueError, match="ASCII"):
        profile.with_overrides(manufacturer="TOO LONG NAME")


# -- user profiles and validation ------------------------------------------------------------------


def write_profile(tmp_path: Path, text: str, dbc: str | None = None) -> Path:
    if dbc is None:
        dbc = DATA.joinpath("pylon.dbc").read_text(encoding="utf-8")
    (tmp_path / "mine.dbc").write_text(dbc, encoding="utf-8")
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = "name: mine\ndbc: mine.dbc\nframes: [0x351, 0x355]\n"


def test_user_profile_loads(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, BASE + "period: 0.5\nmanufacturer: ME\n"))
    assert profile.name == "mine"
    assert profile.period == 0.5
    assert [f.arbitration_id for f in build_frames(profile, make_status(), OutputPhase.NORMAL)] == [0x351, 0x355]


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (BASE.replace("[0x351, 0x355]", "[0x351, 0x400]"), "frames[1]", "not defined"),
        (BASE + "dlc: 2\n", "dlc", "shorter"),
        (BASE + "colour: red\n", "colour", "Extra inputs"),
        (BASE + "signals: {nope: soc}\n", "signals.nope", "no signal"),
        (BASE + "mode: request\n", "request_id", "request_id"),
        (BASE + "manufacturer: ABCDEFGHIJ\n", "manufacturer", "8 ASCII"),
        (BASE.replace("[0x351, 0x355]", "[0x359]"), "frames[0].ProtectionAlarms.marker_p", "no source"),
        (
            BASE.replace("[0x351, 0x355]", "[0x359]") + "constants: {marker_p: 300, marker_n: 1}\n",
            "frames[0].ProtectionAlarms.marker_p",
            "does not fit",
        ),
        (BASE + "signals: {soc: protect_general}\n", "frames[1].StateOfCharge.soc", "1-bit or 2-bit"),
        (
            BASE.replace("[0x351, 0x355]", "[0x35C]") + "signals: {charge_enable: soc}\n",
            "frames[0].Requests.charge_enable",
            "at least 8 bits",
        ),
    ],
)
def test_invalid_profiles_name_file_entry_and_reason(tmp_path: Path, text: str, field: str, reason: str) -> None:
    path = write_profile(tmp_path, text)
    with pytest.raises(DefinitionError, match=reason) as info:
        load_profile(path)
    assert info.value.source == str(path)
    assert info.value.field == field


def test_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(
        DefinitionError,
        match=r"no CAN profile named .no-such-profile.; available: deye, goodwe-lv, growatt-lv, luxpower, pylon",
    ):
        load_profile("no-such-profile")
    with pytest.raises(DefinitionError, match="invalid YAML"):
        load_profile(write_profile(tmp_path, "name: [unclosed\n"))
    with pytest.raises(DefinitionError, match="mapping"):
        load_profile(write_profile(tmp_path, "- a list\n"))
    (tmp_path / "other.yaml").write_text(BASE.replace("mine.dbc", "missing.dbc"), encoding="utf-8")
    with pytest.raises(DefinitionError, match=r"DBC file .*missing.dbc: cannot read the file") as info:
        load_profile(tmp_path / "other.yaml")
    assert info.value.field == "dbc"
    overlapping = (
        'VERSION ""\n\nNS_ :\n\nBS_:\n\nBU_: BMS\n\nBO_ 849 Limits: 2 BMS\n'
        ' SG_ a : 0|16@1+ (1,0) [0|0] "" BMS\n SG_ b : 8|8@1+ (1,0) [0|0] "" BMS\n'
    )
    with pytest.raises(DefinitionError, match="invalid DBC") as info:
        load_profile(write_profile(tmp_path, BASE, dbc=overlapping))
    assert info.value.source.endswith("mine.dbc")


def test_frame_candump_form() -> None:
    assert CanFrame(0x351, bytes.fromhex("1402e803e803")).candump() == "351#1402E803E803"
    assert CanFrame(0x18FF50E5, b"\x01", is_extended_id=True).candump() == "18FF50E5#01"
    assert CanFrame(0x35C, b"").candump() == "35C#"


def test_profile_is_a_value() -> None:
    profile = load_profile("pylon")
    changed: Any = profile.with_overrides(period=0.25)
    assert changed.period == 0.25
    assert profile.period == 1.0
    assert dataclasses.replace(profile).name == "pylon"


# -- issue 12: wire meanings from the vendor documents (docs/can.md, the facts file) ----------------


def test_growatt_rev04_enable_bits_status_word_and_frame_set() -> None:
    profile = load_profile("growatt-lv")
    assert profile.frame_ids == (0x311, 0x312, 0x313, 0x314, 0x315, 0x316, 0x317, 0x318, 0x319, 0x320, 0x321)
    frames = by_id(build_frames(profile, make_status(), OutputPhase.NORMAL))
    # 0x319 byte 0: bit 7 charge enable, bit 6 discharge enable (0xC0 = normal); bits 0-1 chemistry 00.
    assert frames[0x319][0] == 0xC0
    assert frames[0x319][1:] == bytes.fromhex("0CEE0CE4100100")  # 3310 mV, 3300 mV, cell 16, cell 1, no pack
    # 0x311 status word: bits 0-1 and 10-11 = 0b11 discharging (bytes 0x0C 0x03), bit 2 error clear.
    assert frames[0x311][6:] == bytes.fromhex("0C03")
    assert frames[0x312] == bytes.fromhex("0000000001000010")  # no fault bits, 1 pack, 16 cells
    assert frames[0x315] == bytes.fromhex("0CE40CE40CE40CE4")  # cells 1-4: 3300 mV
    assert frames[0x318] == bytes.fromhex("0CE40CE40CE40CEE")  # cells 13-16
    assert frames[0x320] == b"GR\x01\x01" + bytes(4)
    assert frames[0x321] == bytes(8)


@pytest.mark.parametrize(
    ("current", "status_word"),
    [(0.0, "0401"), (20.0, "0802"), (-20.0, "0C03")],
)
def test_growatt_status_word_follows_the_flow(current: float, status_word: str) -> None:
    frames = by_id(
        build_frames(load_profile("growatt-lv"), make_status(make_snapshot(current=current)), OutputPhase.NORMAL)
    )
    assert frames[0x311][6:] == bytes.fromhex(status_word)


def test_growatt_error_flag_and_disabled_enables() -> None:
    profile = load_profile("growatt-lv")
    fault = make_status(make_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE}), charge_enabled=False))
    frames = by_id(build_frames(profile, fault, OutputPhase.NORMAL))
    assert frames[0x311][7] & 0b100  # bit 2: error
    assert frames[0x319][0] == 0x40  # charging not allowed, discharging still is
    assert frames[0x319][7] == 1  # pack 1 is protecting
    safe = by_id(build_frames(profile, make_status(stale=True), OutputPhase.SAFE))
    assert safe[0x319][0] == 0x00
    assert safe[0x311][6:] == bytes.fromhex("0405")  # idle, error


def test_growatt_cells_beyond_the_pack_are_zero_and_the_count_says_so() -> None:
    frames = by_id(
        build_frames(
            load_profile("growatt-lv"), make_status(make_snapshot(cell_voltages=(3.3,) * 8)), OutputPhase.NORMAL
        )
    )
    assert frames[0x312][7] == 8
    assert frames[0x317] == bytes(8)


def test_sma_0x35f_carries_the_capacity_in_bytes_4_5_and_0x35b_is_sent() -> None:
    profile = load_profile("sma")
    frames = by_id(build_frames(profile, make_status(make_snapshot(full_capacity=480.0)), OutputPhase.NORMAL))
    info = frames[0x35F]
    assert int.from_bytes(info[4:6], "little") == 480
    assert info[0:2] == b"LI"
    assert int.from_bytes(info[2:4], "little") == 0x0100
    assert info[6:8] == b"\xff\xff"  # manufacturer id: not ours → invalid
    assert frames[0x35B] == bytes(8)  # no events claimed
    ids = list(profile.frame_ids)
    assert ids.index(0x35A) < ids.index(0x35B)


def _hot_fault_with_cool_sensor() -> Any:
    # An over-temperature fault at 34 °C while another sensor reads 20 °C, with the discharge curve
    # derating from 30 °C: the limit reason is "temperature", caused by heat only.
    settings = LimitSettings(
        discharge_temperature_curve=((-10.0, 0.0), (0.0, 25.0), (10.0, 100.0), (30.0, 100.0), (40.0, 50.0), (55.0, 0.0))
    )
    snapshot = make_snapshot(temperatures=(20.0, 34.0), alarms=frozenset({Alarm.CHARGE_OVERTEMPERATURE}))
    status = make_status(snapshot, settings=settings)
    assert status.limits.discharge_reason is LimitReason.TEMPERATURE
    return status


def test_low_temperature_warnings_need_a_cold_cause_pylon() -> None:
    frames = by_id(build_frames(load_profile("pylon"), _hot_fault_with_cool_sensor(), OutputPhase.NORMAL))
    alarms = frames[0x359]
    assert alarms[0] >> 3 & 1  # over-temperature protection
    assert not alarms[0] >> 4 & 1  # no under-temperature protection
    assert alarms[2] >> 3 & 1  # high-temperature alarm
    assert not alarms[2] >> 4 & 1  # no low-temperature alarm


def test_low_temperature_warnings_need_a_cold_cause_sma() -> None:
    alarms = by_id(build_frames(load_profile("sma"), _hot_fault_with_cool_sensor(), OutputPhase.NORMAL))[0x35A]
    assert alarms[4] >> 6 & 0b11 == 0b01  # warning high temperature: raised
    assert alarms[5] & 0b11 == 0b10  # warning low temperature: cleared
    assert alarms[5] >> 4 & 0b11 == 0b10  # warning low temperature charge: cleared
    assert alarms[1] & 0b11 == 0b10  # alarm low temperature: cleared


def test_cold_derating_raises_only_the_cold_warnings() -> None:
    status = make_status(make_snapshot(temperatures=(3.0, 20.0)))
    values = wire_values(load_profile("sma"), status, OutputPhase.NORMAL, Requests())
    assert values["warn_low_temperature"] and values["warn_low_temperature_charge"]
    assert not values["warn_high_temperature"] and not values["warn_high_temperature_charge"]
    assert not values["protect_low_temperature"]


def test_safe_phase_keeps_last_fresh_measurements_without_invalid_markers() -> None:
    stale = make_status(stale=True)
    pylon = by_id(build_frames(load_profile("pylon"), stale, OutputPhase.SAFE))
    assert int.from_bytes(pylon[0x356][4:6], "little", signed=True) == 210  # 21.0 °C kept, not 0 °C
    growatt = by_id(build_frames(load_profile("growatt-lv"), stale, OutputPhase.SAFE))
    assert growatt[0x319][1:5] == bytes.fromhex("0CEE0CE4")  # last cells, not 0 mV
    assert growatt[0x315] == bytes.fromhex("0CE40CE40CE40CE4")
    assert int.from_bytes(growatt[0x313][4:6], "big", signed=True) == 220
    assert growatt[0x314][:2] == (5000).to_bytes(2, "big")  # remaining 50.00 Ah kept
    solark = by_id(build_frames(load_profile("solark"), stale, OutputPhase.SAFE))
    assert int.from_bytes(solark[0x356][4:6], "little", signed=True) == 210


def test_safe_phase_prefers_the_controllers_last_fresh_bank() -> None:
    fresh = make_status(make_snapshot(temperatures=(30.0, 30.0)))
    stale = dataclasses.replace(make_status(stale=True), last_fresh=fresh.bank)
    frames = by_id(build_frames(load_profile("pylon"), stale, OutputPhase.SAFE))
    assert int.from_bytes(frames[0x356][4:6], "little", signed=True) == 300


def test_safe_phase_sends_invalid_markers_where_the_profile_has_them() -> None:
    frames = by_id(build_frames(load_profile("sma"), make_status(stale=True), OutputPhase.SAFE))
    assert frames[0x356][4:6] == (0x8000).to_bytes(2, "little")  # temperature: invalid
    assert frames[0x373] == b"\xff" * 8  # cells and temperatures: invalid
    assert int.from_bytes(frames[0x355][:2], "little") == 50  # SoC kept: without it a Sunny Island faults


@pytest.mark.parametrize("name", ["pylon", "growatt-lv"])
def test_a_poll_without_temperatures_keeps_the_last_known_ones_not_zero(name: str) -> None:
    # Profiles without "invalid" markers would send raw 0 (0 °C, 0 mV cells) for a value one poll lacks.
    profile = load_profile(name)
    held = HeldMeasurements()
    first = decode_frames(profile, build_frames(profile, make_status(), OutputPhase.NORMAL, held=held))
    gap = make_status(make_snapshot(temperatures=(), mosfet_temperature=None))
    second = decode_frames(profile, build_frames(profile, gap, OutputPhase.NORMAL, held=held))
    without_memory = decode_frames(profile, build_frames(profile, gap, OutputPhase.NORMAL))
    temperatures = [
        (frame_id, signal)
        for frame_id, signals in first.items()
        for signal in signals
        if "temperature" in signal and first[frame_id][signal] != 0
    ]
    assert temperatures, "the profile sends a temperature"
    for frame_id, signal in temperatures:
        assert second[frame_id][signal] == first[frame_id][signal], (hex(frame_id), signal)
    assert any(without_memory[frame_id][signal] == 0 for frame_id, signal in temperatures)


def test_a_bank_larger_than_the_capacity_signals_keeps_its_state_of_charge() -> None:
    # Three 300 Ah packs at 50 % exceed Growatt's 655.35 Ah fields: clamping each alone showed a full bank.
    profile = load_profile("growatt-lv")
    assert profile.capacity_limit is not None and profile.capacity_limit < 900
    packs = [make_snapshot(name, full_capacity=300.0, remaining_capacity=150.0) for name in ("a", "b", "c")]
    decoded = decode_frames(profile, build_frames(profile, make_status(*packs), OutputPhase.NORMAL))
    signals = {name: value for frame in decoded.values() for name, value in frame.items()}
    full = next(value for name, value in signals.items() if "full" in name and "capacity" in name)
    remaining = next(value for name, value in signals.items() if "remaining" in name and "capacity" in name)
    assert full <= profile.capacity_limit
    assert remaining / full == pytest.approx(0.5, abs=0.001)


def test_held_measurements_expire_and_never_mix_packs() -> None:
    held = HeldMeasurements(limit=2)
    values: dict[str, float | bool | None] = {"temperature": 30.0, "cell_count": 16.0, "cell_voltage_16": 3.3}
    hold_missing(values, held)
    for expected in (30.0, 30.0, None):  # held twice, then a dead sensor reads as missing again
        gap: dict[str, float | bool | None] = {"temperature": None}
        hold_missing(gap, held)
        assert gap["temperature"] == expected
    other_pack: dict[str, float | bool | None] = {"cell_count": 8.0, "cell_voltage_16": None}
    hold_missing(other_pack, held)
    assert other_pack["cell_voltage_16"] is None
    numbers: dict[str, float | bool | None] = {"cell_voltage_max_number": 3.0}
    hold_missing(numbers, held)
    assert "cell_voltage_max_number" not in held.values


def test_a_frame_whose_values_repeat_reuses_its_bytes_and_one_that_changes_does_not() -> None:
    # The message keeps its latest encoding: alternating values must never come back stale.
    layout = load_profile("pylon").database.message(0x351)
    names = [signal.name for signal in layout.signals]
    first, second = dict.fromkeys(names, 1), dict.fromkeys(names, 2)
    encoded = [layout.encode_raw(values) for values in (first, first, second, first)]
    assert encoded[0] == encoded[1] == encoded[3] != encoded[2]
    # A fresh message of the same layout, with nothing remembered, packs the same bytes.
    fresh = DbcMessage(layout.frame_id, layout.name, layout.length, layout.is_extended, layout.signals)
    assert encoded[2] == fresh.encode_raw(second) and encoded[0] == fresh.encode_raw(first)

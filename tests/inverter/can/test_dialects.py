"""The "Pylon CAN with differences" profiles, each read back by a decoder written from the facts file.

The decoder below uses struct offsets from rs485-and-more.md §3 and can.md, never the DBC files: a
wrong DBC signal shows up as a mismatch here, where the DBC round trip in test_profiles.py would
agree with itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from typing import Any

import can
import pytest

from bmsgate.inverter.can.profiles import OutputPhase, build_frames, load_profile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.status import InverterStatus
from bmsgate.model import Alarm
from bmsgate.runtime.hub import SnapshotHub

from .helpers import can_sink, channel_name, make_snapshot, make_status, running

PYLON_V2 = ("goodwe-lv", "solis-lv", "schneider")
NEW_PROFILES = ("deye", "victron", *PYLON_V2, "luxpower", "sofar", "pylon-v13")


def frames_of(name: str, status: InverterStatus, phase: OutputPhase = OutputPhase.NORMAL) -> dict[int, bytes]:
    return {f.arbitration_id: f.data for f in build_frames(load_profile(name), status, phase)}


# -- the independent decoder -------------------------------------------------------------------------


def limits_351(data: bytes) -> dict[str, float]:
    cvl, ccl, dcl = struct.unpack_from("<Hhh", data)
    out = {"cvl": cvl / 10, "ccl": ccl / 10, "dcl": dcl / 10}
    if len(data) >= 8:
        out["dvl"] = struct.unpack_from("<H", data, 6)[0] / 10
    return out


def measurements_356(data: bytes) -> tuple[float, float, float]:
    voltage, current, temperature = struct.unpack_from("<hhh", data)
    return voltage / 100, current / 10, temperature / 10


def flags_35c(byte: int) -> dict[str, bool]:
    return {
        "charge_enable": bool(byte & 0x80),
        "discharge_enable": bool(byte & 0x40),
        "force_charge_1": bool(byte & 0x20),
        "force_charge_2": bool(byte & 0x10),
    }


def protection_359(data: bytes) -> dict[str, bool]:
    return {
        "protect_over_voltage": bool(data[0] & 0x02),
        "protect_under_voltage": bool(data[0] & 0x04),
        "protect_over_temperature": bool(data[0] & 0x08),
        "protect_system_error": bool(data[1] & 0x08),
        "alarm_high_voltage": bool(data[2] & 0x02),
        "alarm_internal_comm": bool(data[3] & 0x08),
    }


_35A_PAIRS = (
    "general",
    "high_voltage",
    "low_voltage",
    "high_temperature",
    "low_temperature",
    "high_temperature_charge",
    "low_temperature_charge",
    "high_current",
    "high_charge_current",
    "contactor",
    "short_circuit",
    "bms_internal",
    "cell_imbalance",
)


def pairs_35a(data: bytes) -> dict[str, int]:
    """Two bits per condition, alarms in bytes 0-3 and warnings in bytes 4-7 (can.md order)."""
    word = int.from_bytes(data, "little")
    out = {}
    for level, base in (("alarm", 0), ("warning", 32)):
        for index, name in enumerate(_35A_PAIRS):
            out[f"{level}_{name}"] = (word >> (base + 2 * index)) & 0b11
    return out


def ascii_35e(data: bytes) -> str:
    return data.decode("ascii").rstrip(" ")


def status_with(**limit_changes: Any) -> InverterStatus:
    status = make_status()
    return dataclasses.replace(status, limits=dataclasses.replace(status.limits, **limit_changes))


# -- every new profile -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW_PROFILES)
def test_common_pylon_frames_decode_to_the_status(name: str) -> None:
    status = make_status()
    frames = frames_of(name, status)
    limits = limits_351(frames[0x351])
    assert limits["cvl"] == pytest.approx(status.limits.charge_voltage, abs=0.05)
    assert limits["ccl"] == pytest.approx(status.limits.charge_current, abs=0.05)
    assert limits["dcl"] == pytest.approx(status.limits.discharge_current, abs=0.05)
    soc, soh = struct.unpack_from("<HH", frames[0x355])
    assert (soc, soh) == (50, 98)
    voltage, current, _ = measurements_356(frames[0x356])
    assert voltage == pytest.approx(52.8)
    assert current == pytest.approx(-12.3)
    assert ascii_35e(frames[0x35E]) == "PYLON"


@pytest.mark.parametrize("name", NEW_PROFILES)
def test_safe_frames_zero_limits_and_clear_the_enables(name: str) -> None:
    stale = make_status(stale=True)
    frames = frames_of(name, stale, OutputPhase.SAFE)
    limits = limits_351(frames[0x351])
    assert (limits["ccl"], limits["dcl"]) == (0.0, 0.0)
    assert limits["cvl"] > 0  # never CVL 0 (Victron faults, Deye warns W31)
    if 0x35C in frames:
        flags = flags_35c(frames[0x35C][0])
        assert not flags["charge_enable"] and not flags["discharge_enable"]
    if 0x359 in frames:
        assert protection_359(frames[0x359])["protect_system_error"]
    if 0x35A in frames:
        assert pairs_35a(frames[0x35A])["alarm_bms_internal"] == 0b01


@pytest.mark.parametrize("name", ["pylon", *NEW_PROFILES])
def test_every_profile_lists_the_inverters_it_fits_and_how_it_is_known(name: str) -> None:
    definition = load_profile(name).definition
    assert definition.inverters
    assert definition.verified


# -- per inverter -------------------------------------------------------------------------------------


def test_deye_forces_soc_because_it_ignores_zero_limits() -> None:
    frames = frames_of("deye", status_with(charge_current=0.0))
    assert struct.unpack_from("<H", frames[0x355])[0] == 100
    frames = frames_of("deye", status_with(discharge_current=0.0))
    assert struct.unpack_from("<H", frames[0x355])[0] == 0
    # The force-charge bits are Pylon's 0x35C b5/b4 (Deye grid-charges to CVL on them).
    assert len(frames[0x35C]) == 2 and len(frames[0x351]) == 6


def test_victron_sends_the_smastyle_set_every_0_9_s_and_names_pylon_for_dvcc() -> None:
    profile = load_profile("victron")
    assert profile.period <= 1.0
    assert set(profile.frame_ids) == {0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x373, 0x379}
    frames = frames_of("victron", make_status())
    assert len(frames[0x351]) == 8 and limits_351(frames[0x351])["dvl"] == pytest.approx(46.4)
    assert struct.unpack_from("<H", frames[0x355], 4)[0] == 5000  # 0.01 %
    assert struct.unpack_from("<H", frames[0x35F], 4)[0] == 100  # capacity Ah
    assert struct.unpack_from("<H", frames[0x379])[0] == 100
    pairs = pairs_35a(frames[0x35A])
    assert pairs["alarm_high_voltage"] == 0b10  # SMA pairs: "cleared"
    frames = frames_of("victron", make_status(make_snapshot(alarms=frozenset({Alarm.CELL_OVERVOLTAGE}))))
    assert pairs_35a(frames[0x35A])["alarm_high_voltage"] == 0b01


@pytest.mark.parametrize("name", PYLON_V2)
def test_pylon_v2_set_adds_0x35a_0x373_0x379_to_pylon_1_2(name: str) -> None:
    healthy = frames_of(name, make_status())
    assert {0x359, 0x35C, 0x35A, 0x373, 0x379} <= set(healthy)
    # Healthy is all zero, as real Pylontech 0x35A frames are (facts §5 F).
    assert healthy[0x35A] == bytes(8)
    assert healthy[0x359][5:7] == b"PN"
    cell_min, cell_max, t_min, t_max = struct.unpack_from("<HHHH", healthy[0x373])
    assert (cell_min, cell_max) == (3300, 3310)
    assert (t_min, t_max) == (293, 295)  # K
    alarmed = frames_of(name, make_status(make_snapshot(alarms=frozenset({Alarm.PACK_UNDERVOLTAGE}))))
    pairs = pairs_35a(alarmed[0x35A])
    # "Raised" is 01 in either reading (SMA pairs or one bit per condition).
    assert pairs["alarm_low_voltage"] == 0b01 and pairs["alarm_general"] == 0b01
    assert pairs["alarm_high_voltage"] == 0b00
    assert protection_359(alarmed[0x359])["protect_under_voltage"]


def test_old_firmware_0x351_capture_is_reproduced_by_the_pylon_v2_layout() -> None:
    # Facts §5 F: 14 02 C0 12 C0 12 C2 01 = 53.2 V, 480.0 A, 480.0 A, 45.0 V.
    status = status_with(charge_voltage=53.2, charge_current=480.0, discharge_current=480.0, min_voltage=45.0)
    assert frames_of("goodwe-lv", status)[0x351] == bytes.fromhex("1402C012C012C201")


def test_pylon_1_2_reproduces_the_old_firmware_captures_but_0x351s_dvl() -> None:
    # Facts §5 F: a US5000 stack reporting 6 modules, old firmware.
    packs = [
        make_snapshot(f"p{i}", voltage=49.86, current=-4.5, soc=88.0, soh=94.0, temperatures=(36.3,)) for i in range(6)
    ]
    frames = frames_of("pylon", make_status(*packs))
    assert frames[0x355] == bytes.fromhex("58005E00")
    assert frames[0x356] == bytes.fromhex("7A13F2FE6B01")
    assert frames[0x359] == bytes.fromhex("0000000006504E")
    assert frames[0x35C] == bytes.fromhex("C000")
    assert frames[0x35E] == b"PYLON   "
    assert len(frames[0x351]) == 6  # the V1.2 text's DLC; real frames carry 8 (see pylon-v2 for that layout)


def test_solis_forces_soc_schneider_and_goodwe_do_not() -> None:
    assert load_profile("solis-lv").quirks.soc_forcing
    assert not load_profile("goodwe-lv").quirks.soc_forcing
    assert not load_profile("schneider").quirks.soc_forcing


def test_luxpower_lithium_6_reused_bytes() -> None:
    snapshot = make_snapshot(cell_voltages=(3.30,) * 15 + (3.342,), temperatures=(19.5, 23.4), cycles=321)
    frames = frames_of("luxpower", make_status(snapshot))
    soc, soh, max_mv, min_mv = struct.unpack_from("<HHHH", frames[0x355])
    assert (soc, soh, max_mv, min_mv) == (50, 98, 3342, 3300)
    voltage, current, t_max, t_min = struct.unpack_from("<hhhh", frames[0x356])
    assert (voltage, current, t_max, t_min) == (5280, -123, 234, 195)
    assert struct.unpack_from("<HhhH", frames[0x351])[3] == 464  # discharge cut voltage, 0.1 V
    assert frames[0x359][4] == 1  # module count
    assert struct.unpack_from("<H", frames[0x359], 5)[0] == 100  # capacity Ah, bytes 5-6
    assert flags_35c(frames[0x35C][0])["charge_enable"]
    assert struct.unpack_from("<H", frames[0x35C], 2)[0] == 321  # cycles
    profile = load_profile("luxpower")
    assert profile.period == 1.0 and profile.keepalive_id == 0x305


def test_sofar_remaining_capacity_in_whole_ah_and_cycles() -> None:
    frames = frames_of("sofar", make_status(make_snapshot(remaining_capacity=57.6, cycles=77)))
    # 1 Ah: the conservative reading (a 0.1 Ah inverter sees less energy, never ten times more).
    assert struct.unpack_from("<H", frames[0x355], 6)[0] == 58
    assert struct.unpack_from("<H", frames[0x355], 4)[0] == 0
    assert struct.unpack_from("<H", frames[0x356], 6)[0] == 77


def test_pylon_v13_frame_set_matches_newer_firmware_captures() -> None:
    snapshot = make_snapshot(soc=84.0, soh=96.0, full_capacity=572.0)
    frames = frames_of("pylon-v13", make_status(snapshot))
    assert 0x359 not in frames and 0x35C not in frames
    assert {frame_id: len(data) for frame_id, data in frames.items()} == {
        0x351: 8,
        0x355: 6,
        0x356: 6,
        0x35A: 8,
        0x35E: 8,
        0x35F: 8,
    }
    # Facts §5 F (new firmware): 0x355 54 00 60 00 00 00; 0x35A all 00 when healthy; 0x35F "LI" … 572 Ah.
    assert frames[0x355] == bytes.fromhex("540060000000")
    assert frames[0x35A] == bytes(8)
    assert frames[0x35F][0:2] == b"LI"
    assert struct.unpack_from("<H", frames[0x35F], 4)[0] == 572


async def test_schneider_29_bit_keepalive_counts_as_the_inverter() -> None:
    channel = channel_name()
    hub = SnapshotHub()
    hub.register("a", stale_after=60.0)
    hub.publish(make_snapshot())
    bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        sink = can_sink(CanSettings(interface="virtual", channel=channel, profile="schneider", period=0.05))
        async with running(sink, hub):
            for _ in range(100):
                # The XW Pro sends its 0x305 with a 29-bit identifier.
                bus.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=True))
                if sink.status.inverter_present is True:
                    break
                await asyncio.sleep(0.05)
            assert sink.status.inverter_present is True
    finally:
        bus.shutdown()

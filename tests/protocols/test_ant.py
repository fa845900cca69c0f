"""ANT BMS, ANT-BLE protocol: every field of the status (0x11) and device-info (0x12) replies.

Fixtures: the status and device-info replies of a 22-cell ANT BMS (4 sensors, lithium titanate) and its two
"problem" status variants, captured over BLE and published with patman15/aiobmsble
(tests/bms/test_ant_bms.py); the expected values are the ones stated there (50.88 V, 2.1 A, SoC 10 %, SoH 100 %,
80 Ah, 9.957766 Ah remaining, 106 W, 29 °C sensors, 30 °C MOSFET and balancer, hardware "24BH", software
"24BHUB00-211026A"). Frames for other cell and sensor counts are built from the layout documented in
syssi/esphome-ant-bms (components/ant_bms_ble/ant_bms_ble.cpp), as is every MOSFET status code.

The end of the file tests the general engine constructs this definition introduced (`shift`, `one_of`,
`codes`, `framing.check_end`).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from bmsgate.errors import DecodeError, DefinitionError, FrameError
from bmsgate.model import Alarm
from bmsgate.protocols import compile_definition, decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus
from bmsgate.protocols.definition import definition_from_mapping

ANT = get_protocol("ant")

STATUS = bytes.fromhex(
    "7ea11100009e050404160000000000000000000088010000000000000000000000001e091b091e091d091d091e0920091e09"
    "8f088e0890082209eb08200920091f091e091f091e091f0921091f091d001d001d001d001e001e00e01315000a0064000101"
    "000000b4c40486f197003aede8006a000000a1f2c0030000000022090c008e080a009400080900006d006a00af02f3fa4c74"
    "e5002866ec00c35d6200ccb39200edc8aa55"
)
DEVICE_INFO = bytes.fromhex(
    "7ea1126c02203234424800000000000000000000000032344248554230302d323131303236415796ff0b000041f2aa55"
)


def _with_fet_bytes(charge: int, discharge: int) -> bytes:
    """The status capture with other MOSFET status bytes (offset 98 here: 34 + 2 × (22 cells + 4 sensors) + 12)."""
    frame = bytearray(STATUS)
    assert frame[98:100] == b"\x01\x01"
    frame[98], frame[99] = charge, discharge
    frame[-4:-2] = crc16_modbus(frame[1:-4]).to_bytes(2, "little")
    return bytes(frame)


# aiobmsble's "low_value" and "high_value" captures are the status capture with these MOSFET bytes.
LOW_VALUE = _with_fet_bytes(0x02, 0x02)
HIGH_VALUE = _with_fet_bytes(0x0E, 0x0E)


def _status(
    cells: list[int],
    temperatures: list[int],
    *,
    mosfet: int = 25,
    balancer: int = 26,
    voltage: int = 5300,
    current: int = -123,
    soc: int = 57,
    soh: int = 99,
    charge: int = 1,
    discharge: int = 1,
    balancer_status: int = 0,
    balanced: int = 0,
    battery_status: int = 1,
    protection: int = 0,
    warning: int = 0,
) -> bytes:
    """A status frame built from the documented layout (offsets after the cells and sensors move)."""
    data = bytearray([0x05, battery_status, len(temperatures), len(cells)])
    data += struct.pack("<QQQ", protection, warning, 0)
    data += struct.pack(f"<{len(cells)}H", *cells) + struct.pack(f"<{len(temperatures)}h", *temperatures)
    data += struct.pack("<hhHhHHBBBx", mosfet, balancer, voltage, current, soc, soh, charge, discharge, balancer_status)
    data += struct.pack("<IIIiII", 100_000_000, 57_000_000, 1_234_567, -652, 3_600, balanced)
    data += struct.pack("<HHHHHH", 3310, 2, 3290, 1, 20, 3300)
    data += struct.pack("<HHHHH", 0, 0, 0, 0, 0xFAF2)
    data += struct.pack("<IIII", 456_789, 567_890, 7_200, 10_800)
    frame = bytes([0x7E, 0xA1, 0x11, 0x00, 0x00, len(data)]) + data
    return frame + crc16_modbus(frame[1:]).to_bytes(2, "little") + b"\xaa\x55"


def test_requests_are_the_documented_frames() -> None:
    frames = {request.name: request.frame.hex(" ") for request in ANT.requests}
    assert frames == {
        "device_info": "7e a1 02 6c 02 20 58 c4 aa 55",
        "status": "7e a1 01 00 00 be 18 55 aa 55",
    }
    for request in ANT.requests:
        assert ANT.request_checksum_ok(request.frame)


def test_every_field_of_the_captures() -> None:
    snapshot = decode(ANT, [DEVICE_INFO, STATUS], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(50.88)
    assert snapshot.current == pytest.approx(2.1)
    assert snapshot.soc == pytest.approx(10.0)
    assert snapshot.soh == pytest.approx(100.0)
    assert snapshot.design_capacity == pytest.approx(80.0)
    assert snapshot.remaining_capacity == pytest.approx(9.957766)
    assert snapshot.cell_voltages == pytest.approx(
        [
            *(2.334, 2.331, 2.334, 2.333, 2.333, 2.334, 2.336, 2.334, 2.191, 2.19, 2.192),
            *(2.338, 2.283, 2.336, 2.336, 2.335, 2.334, 2.335, 2.334, 2.335, 2.337, 2.335),
        ]
    )
    assert snapshot.temperatures == pytest.approx([29.0, 29.0, 29.0, 29.0])
    assert snapshot.mosfet_temperature == pytest.approx(30.0)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.balancing is False
    assert snapshot.balancing_cells == ()
    assert snapshot.alarms == frozenset()
    assert snapshot.cycles is None  # not reported (aiobmsble derives it from the charge total)
    assert snapshot.device.manufacturer == "ANT"
    assert snapshot.device.hardware_version == "24BH"
    assert snapshot.device.software_version == "24BHUB00-211026A"
    extras = snapshot.extras
    assert extras["balancer_temperature"] == 30
    assert extras["power"] == 106
    assert extras["cell_delta"] == pytest.approx(0.148)
    assert extras["total_cycle_capacity"] == pytest.approx(15265.082)  # aiobmsble: total charge 15265 Ah
    assert extras["battery_status"] == "standby"
    assert extras["battery_type"] == "lithium_titanate"
    assert extras["charge_mosfet_status"] == 1
    assert extras["discharge_mosfet_status"] == 1
    assert extras["balancer_status"] == 0
    assert extras["cell_max_voltage"] == pytest.approx(2.338)
    assert extras["cell_max_number"] == 12
    assert extras["cell_min_voltage"] == pytest.approx(2.19)
    assert extras["cell_min_number"] == 10
    assert extras["cell_average"] == pytest.approx(2.312)
    assert extras["protection_flags"] == 0
    assert extras["warning_flags"] == 0x0188_0000
    for key in ("total_runtime", "total_discharged_capacity", "total_charged_capacity"):
        assert key in extras
    assert extras["total_discharging_time"] == 6446531
    assert extras["total_charging_time"] == 9614284


def test_problem_captures() -> None:
    # Rebuilding them reproduces the published frames byte for byte (their CRCs 4D 04 and C8 F6).
    assert LOW_VALUE[-4:] == bytes.fromhex("4d04aa55")
    assert HIGH_VALUE[-4:] == bytes.fromhex("c8f6aa55")
    low = decode(ANT, [LOW_VALUE], timestamp=0.0)
    assert low.charge_enabled is False
    assert low.discharge_enabled is False
    assert low.alarms == {Alarm.CELL_OVERVOLTAGE, Alarm.CELL_UNDERVOLTAGE}
    high = decode(ANT, [HIGH_VALUE], timestamp=0.0)
    assert high.charge_enabled is False  # 0x0E "waiting": off, but no alarm
    assert high.discharge_enabled is False
    assert high.alarms == {Alarm.DISCHARGE_MOSFET_FAULT}  # discharge 0x0E "open failed"


def test_device_info_reply_with_its_misplaced_end_through_the_assembler() -> None:
    assembler = ANT.new_assembler()
    frames = []
    for stream in (DEVICE_INFO, STATUS):
        for start in range(0, len(stream), 20):
            frames += assembler.feed(stream[start : start + 20])
    assert [frame.key for frame in frames] == [0x12, 0x11]
    assert len(frames[0].raw) == 42  # the length the frame announces; its six extra bytes were noise
    assert assembler.stats.rejected == 0
    assert decode(ANT, frames, timestamp=0.0).device.software_version == "24BHUB00-211026A"


def test_corrupt_frames_are_rejected() -> None:
    broken = bytearray(STATUS)
    broken[-4] ^= 0xFF
    with pytest.raises(FrameError, match="checksum"):
        ANT.check_frame(bytes(broken))


@pytest.mark.parametrize(("cells", "sensors"), [(4, 0), (7, 1), (16, 2), (32, 6)])
def test_fields_after_the_cells_move_with_the_counts(cells: int, sensors: int) -> None:
    voltages = [3300 + index for index in range(cells)]
    temperatures = [20 + index for index in range(sensors)]
    snapshot = decode(ANT, [_status(voltages, temperatures, balanced=0b101)], timestamp=0.0)
    assert snapshot.cell_voltages == pytest.approx([value / 1000 for value in voltages])
    assert snapshot.temperatures == pytest.approx([float(value) for value in temperatures])
    assert snapshot.mosfet_temperature == pytest.approx(25.0)
    assert snapshot.extras["balancer_temperature"] == 26
    assert snapshot.voltage == pytest.approx(53.0)
    assert snapshot.current == pytest.approx(-12.3)
    assert snapshot.soc == pytest.approx(57.0)
    assert snapshot.soh == pytest.approx(99.0)
    assert snapshot.design_capacity == pytest.approx(100.0)
    assert snapshot.remaining_capacity == pytest.approx(57.0)
    assert snapshot.extras["total_cycle_capacity"] == pytest.approx(1234.567)
    assert snapshot.extras["power"] == -652
    assert snapshot.extras["total_runtime"] == 3600
    assert snapshot.balancing_cells == (1, 3)
    assert snapshot.balancing is True
    assert snapshot.extras["cell_max_voltage"] == pytest.approx(3.310)
    assert snapshot.extras["cell_max_number"] == 2
    assert snapshot.extras["cell_min_voltage"] == pytest.approx(3.290)
    assert snapshot.extras["cell_min_number"] == 1
    assert snapshot.extras["cell_delta"] == pytest.approx(0.020)
    assert snapshot.extras["cell_average"] == pytest.approx(3.300)
    assert snapshot.extras["battery_type"] == "lifepo4"
    assert snapshot.extras["total_discharged_capacity"] == pytest.approx(456.789)
    assert snapshot.extras["total_charged_capacity"] == pytest.approx(567.890)
    assert snapshot.extras["total_discharging_time"] == 7200
    assert snapshot.extras["total_charging_time"] == 10800
    assert snapshot.extras["battery_status"] == "idle"


def test_minus_40_is_an_absent_sensor() -> None:
    # 0xFFD8: an unplugged NTC; a real -40 °C is outside every lithium pack's operating range.
    frame = _status([3300] * 4, [-40, 21, -40], mosfet=-40, balancer=-40)
    snapshot = decode(ANT, [frame], timestamp=0.0)
    assert snapshot.temperatures == pytest.approx([21.0])
    assert snapshot.mosfet_temperature is None
    assert "balancer_temperature" not in snapshot.extras


def test_negative_temperatures_and_raw_masks() -> None:
    frame = _status([3300] * 4, [-12, 3], mosfet=-5, protection=1 << 40, warning=0x8000_0000_0000_0001)
    snapshot = decode(ANT, [frame], timestamp=0.0)
    assert snapshot.temperatures == pytest.approx([-12.0, 3.0])
    assert snapshot.mosfet_temperature == pytest.approx(-5.0)
    assert snapshot.extras["protection_flags"] == 1 << 40
    assert snapshot.extras["warning_flags"] == 0x8000_0000_0000_0001


_CHARGE_CODES = {
    0x02: Alarm.CELL_OVERVOLTAGE,
    0x03: Alarm.CHARGE_OVERCURRENT,
    0x04: Alarm.BATTERY_FULL,
    0x05: Alarm.PACK_OVERVOLTAGE,
    0x06: Alarm.BATTERY_OVERTEMPERATURE,
    0x07: Alarm.MOSFET_OVERTEMPERATURE,
    0x08: Alarm.CURRENT_SENSOR_FAULT,
    0x0C: Alarm.CHARGE_MOSFET_FAULT,
    0x0D: Alarm.DISCHARGE_MOSFET_FAULT,
    0x10: Alarm.CELL_OVERVOLTAGE,
    0x11: Alarm.CHARGE_UNDERTEMPERATURE,
    0x12: Alarm.CELL_IMBALANCE,
    0x14: Alarm.SYSTEM_FAULT,
}
_DISCHARGE_CODES = {
    0x02: Alarm.CELL_UNDERVOLTAGE,
    0x03: Alarm.DISCHARGE_OVERCURRENT,
    0x04: Alarm.DISCHARGE_OVERCURRENT,
    0x05: Alarm.PACK_UNDERVOLTAGE,
    0x06: Alarm.BATTERY_OVERTEMPERATURE,
    0x07: Alarm.MOSFET_OVERTEMPERATURE,
    0x08: Alarm.CURRENT_SENSOR_FAULT,
    0x0C: Alarm.SHORT_CIRCUIT,
    0x0D: Alarm.DISCHARGE_MOSFET_FAULT,
    0x0E: Alarm.DISCHARGE_MOSFET_FAULT,
    0x10: Alarm.CELL_UNDERVOLTAGE,
    0x11: Alarm.DISCHARGE_UNDERTEMPERATURE,
    0x12: Alarm.CELL_IMBALANCE,
    0x13: Alarm.SYSTEM_FAULT,
}


@pytest.mark.parametrize("code", range(0x16))
def test_charge_mosfet_status_codes(code: int) -> None:
    snapshot = decode(ANT, [_status([3300] * 4, [20], charge=code)], timestamp=0.0)
    assert snapshot.charge_enabled is (code == 1)
    assert snapshot.discharge_enabled is True
    assert snapshot.extras["charge_mosfet_status"] == code
    expected = {_CHARGE_CODES[code]} if code in _CHARGE_CODES else set()
    assert snapshot.alarms == expected


@pytest.mark.parametrize("code", range(0x15))
def test_discharge_mosfet_status_codes(code: int) -> None:
    snapshot = decode(ANT, [_status([3300] * 4, [20], discharge=code)], timestamp=0.0)
    assert snapshot.discharge_enabled is (code == 1)
    assert snapshot.charge_enabled is True
    assert snapshot.extras["discharge_mosfet_status"] == code
    expected = {_DISCHARGE_CODES[code]} if code in _DISCHARGE_CODES else set()
    assert snapshot.alarms == expected


def test_a_cell_count_larger_than_the_frame_is_a_decode_error() -> None:
    frame = bytearray(_status([3300] * 4, [20]))
    frame[9] = 60  # 60 cells announced, the frame holds 4
    frame[-4:-2] = crc16_modbus(frame[1:-4]).to_bytes(2, "little")
    with pytest.raises(DecodeError):
        decode(ANT, [bytes(frame)], timestamp=0.0)


def test_simulator_encodes_what_it_decodes() -> None:
    state: dict[str, Any] = {
        "cell_voltages": [3.301, 3.302, 3.303, 3.304, 3.305],
        "temperatures": [21.0, 22.0, 23.0],
        "mosfet_temperature": 30.0,
        "voltage": 16.51,
        "current": -4.2,
        "soc": 55.0,
        "charge_enabled": False,
        "discharge_enabled": True,
        "alarms": {Alarm.CELL_OVERVOLTAGE},
        "balancing_cells": [2, 5],
    }
    frame = ANT.encode_reply(0x11, state)
    assert ANT.check_frame(frame).key == 0x11
    assert frame.endswith(b"\xaa\x55")
    snapshot = decode(ANT, [frame], timestamp=0.0)
    assert snapshot.cell_voltages == pytest.approx(state["cell_voltages"])
    assert snapshot.temperatures == pytest.approx(state["temperatures"])
    assert snapshot.voltage == pytest.approx(16.51)
    assert snapshot.current == pytest.approx(-4.2)
    assert snapshot.charge_enabled is False
    assert snapshot.discharge_enabled is True
    assert snapshot.alarms == {Alarm.CELL_OVERVOLTAGE}  # the charge MOSFET's reason code
    assert snapshot.balancing_cells == (2, 5)


# -- the engine constructs (general; documented in docs/protocol-definitions.md) ----------------------------


def _definition(fields: list[dict[str, Any]], **framing: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "title": "t",
        "framing": {"start": "AA", "length": {"offset": 1, "add": 2}, "payload_offset": 2, **framing},
        "requests": [{"name": "r", "frame": "AA 00", "reply": None}],
        "replies": {1: {"name": "x", "fields": fields}},
    }


def test_shift_needs_known_variables() -> None:
    fields = [{"target": "voltage", "at": 0, "shift": {"var.cells": 2}}]
    with pytest.raises(DefinitionError, match=r"var\.cells"):
        definition_from_mapping(_definition(fields))
    with pytest.raises(DefinitionError, match="shift keys"):
        definition_from_mapping(_definition([{"target": "voltage", "at": 0, "shift": {"cells": 2}}]))


def test_shifted_fields_decode_relative_to_their_moving_start() -> None:
    fields = [
        {"target": "var.n", "at": 0, "type": "u8"},
        {"target": "cell_voltages", "at": 1, "count": "var.n", "scale": 0.001},
        {"target": "voltage", "at": 1, "scale": 0.01, "shift": {"var.n": 2}},
        {"target": "extras.label", "at": 3, "type": "str", "size": 2, "shift": {"var.n": 2}},
    ]
    protocol = compile_definition(definition_from_mapping(_definition(fields)))
    frame = bytes([0xAA, 9, 2, 0x0C, 0xE4, 0x0C, 0xE5, 0x05, 0x14, 0x4F, 0x4B])
    snapshot = decode(protocol, [frame], timestamp=0.0)
    assert snapshot.cell_voltages == pytest.approx([3.300, 3.301])
    assert snapshot.voltage == pytest.approx(13.0)
    assert snapshot.extras["label"] == "OK"
    assert protocol.encode_reply(1, {"cell_voltages": [3.3, 3.301], "voltage": 13.0, "extras.label": "OK"}) == frame
    short = bytes([0xAA, 7, 2, 0x0C, 0xE4, 0x0C, 0xE5, 0x05, 0x14])
    with pytest.raises(DecodeError, match="shifted"):
        decode(protocol, [short], timestamp=0.0)


def test_one_of_and_codes_are_validated() -> None:
    with pytest.raises(DefinitionError, match="one_of"):
        definition_from_mapping(_definition([{"target": "voltage", "at": 0, "one_of": [1]}]))
    with pytest.raises(DefinitionError, match="one_of"):
        definition_from_mapping(_definition([{"target": "charge_enabled", "at": 0, "one_of": [1], "bit": 0}]))
    with pytest.raises(DefinitionError, match="not both"):
        definition_from_mapping(
            _definition([{"target": "alarms", "at": 0, "flags": {0: "short_circuit"}, "codes": {1: "low_soc"}}])
        )
    definition = definition_from_mapping(_definition([{"target": "alarms", "at": 0, "codes": {3: "low_soc"}}]))
    assert definition.possible_alarms == {Alarm.LOW_SOC}


def test_check_end_false_still_writes_the_end_marker() -> None:
    fields = [{"target": "voltage", "at": 0, "scale": 0.01}]
    definition = definition_from_mapping(_definition(fields, end="55", check_end=False))
    protocol = compile_definition(definition)
    frame = protocol.encode_reply(1, {"voltage": 12.0})
    assert frame == bytes([0xAA, 3, 0x04, 0xB0, 0x55])
    assert protocol.check_frame(bytes([0xAA, 3, 0x04, 0xB0, 0x00])).raw[-1] == 0x00
    strict = compile_definition(definition_from_mapping(_definition(fields, end="55")))
    with pytest.raises(FrameError, match="does not end"):
        strict.check_frame(bytes([0xAA, 3, 0x04, 0xB0, 0x00]))

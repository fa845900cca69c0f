"""Seplos BMS V3 (Modbus, pack address 0x01): every field of the PIA, PIB and PIC replies.

Fixtures:
- PIA and PIB: the pack-1 replies captured from a Seplos V3 over BLE and published with patman15/aiobmsble
  (tests/bms/test_seplos_bms.py, ``PIA1`` / ``PIB1``); the expected values are the ones stated there
  (pack 1: 52.34 V, -7.2 A, 47.9 %, 99.9 % SoH, 134.12 Ah, cycle 9, 25.0/23.8/23.9/24.9 °C cells,
  28.1 °C ambient, 26.6 °C MOSFET).
- PIC: no public PIC capture exists; frames are built from the documented coil layout (docs/protocols/seplos.md).
  Its bytes 8-17 carry the same TB09...TB15 bytes as the system block EIC, so the EIC captures of the same
  aiobmsble test ("discharging, both FETs on, no alarm" and every alarm bit set) are reused there.
"""

from __future__ import annotations

import pytest

from bmsgate.errors import DecodeError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus

SEPLOS = get_protocol("seplos")

PIA = bytes.fromhex(
    "010422" "1472fd3034646d6000d501df03e700090cc70b9f0cc80cc60ba50b99000000b400b4" "6ff3"
)  # fmt: skip
PIB = bytes.fromhex(
    "010434"
    "0cc80cc80cc80cc70cc70cc70cc70cc60cc60cc70cc70cc70cc70cc80cc80cc8"
    "0ba50b990b9a0ba4" "0aab0aab0aab0aab" "0bc40bb5"
    "971f"
)  # fmt: skip
EIC_OK = bytes.fromhex("01000000000000030000")  # EIC data of the capture: TB09 = discharging, TB07 = both FETs on
EIC_ALL = bytes.fromhex("01ffffffffffff03ffff")  # EIC data of the capture with every alarm byte set


def _frame(function: int, data: bytes) -> bytes:
    frame = bytes([0x01, function, len(data)]) + data
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def _pic(*, masks: bytes = bytes(8), tb: bytes = EIC_OK) -> bytes:
    """A PIC reply: 8 bytes of per-cell masks, then TB09, TB02, TB03, TB04, TB05, TB16, TB06, TB07, TB08, TB15."""
    assert len(masks) == 8 and len(tb) == 10
    return _frame(0x01, masks + tb)


def _tb(**bytes_at: int) -> bytes:
    """TB bytes (TB09 first) with both FETs on and the given bytes set, e.g. ``_tb(tb02=0x01)``."""
    order = ["tb09", "tb02", "tb03", "tb04", "tb05", "tb16", "tb06", "tb07", "tb08", "tb15"]
    values = dict.fromkeys(order, 0) | {"tb07": 0x03} | bytes_at
    return bytes(values[name] for name in order)


def test_requests_are_the_documented_modbus_reads() -> None:
    reads = {request.name: request.frame[:6].hex() for request in SEPLOS.requests}
    assert reads == {"pia": "010410000011", "pib": "01041100001a", "pic": "010112000090"}
    for request in SEPLOS.requests:
        assert crc16_modbus(request.frame[:-2]).to_bytes(2, "little") == request.frame[-2:]
    assert [request.reply for request in SEPLOS.requests] == [0x0422, 0x0434, 0x0112]


def test_the_captured_frames_pass_the_frame_checks() -> None:
    assert SEPLOS.check_frame(PIA).key == 0x0422
    assert SEPLOS.check_frame(PIB).key == 0x0434


def test_every_field_of_the_pia_and_pib_captures() -> None:
    snapshot = decode(SEPLOS, [PIA, PIB], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(52.34)
    assert snapshot.current == pytest.approx(-7.2)
    assert snapshot.remaining_capacity == pytest.approx(134.12)
    assert snapshot.full_capacity == pytest.approx(280.0)
    assert snapshot.soc == pytest.approx(47.9)
    assert snapshot.soh == pytest.approx(99.9)
    assert snapshot.cycles == 9
    assert snapshot.cell_voltages == pytest.approx(
        [3.272, 3.272, 3.272, 3.271, 3.271, 3.271, 3.271, 3.27, 3.27, 3.271, 3.271, 3.271, 3.271, 3.272, 3.272, 3.272]
    )
    assert snapshot.temperatures == pytest.approx([25.0, 23.8, 23.9, 24.9])
    assert snapshot.mosfet_temperature == pytest.approx(26.6)
    assert snapshot.extras["ambient_temperature"] == pytest.approx(28.1)
    assert snapshot.extras["cell_average"] == pytest.approx(3.271)
    assert snapshot.extras["cell_max_voltage"] == pytest.approx(3.272)
    assert snapshot.extras["cell_min_voltage"] == pytest.approx(3.270)
    assert set(snapshot.extras) == {"ambient_temperature", "cell_average", "cell_max_voltage", "cell_min_voltage"}
    assert snapshot.device.manufacturer == "Seplos"
    # Not in PIA/PIB: MOSFETs, alarms and balancing come from PIC.
    assert snapshot.charge_enabled is None
    assert snapshot.alarms == frozenset()


def test_pic_from_the_captured_system_state_bytes() -> None:
    snapshot = decode(SEPLOS, [PIA, PIB, _pic()], timestamp=0.0)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.heating is False
    assert snapshot.balancing is False
    assert snapshot.balancing_cells == ()
    assert snapshot.alarms == frozenset()
    assert snapshot.extras["system_state"] == 0x01  # discharging
    assert snapshot.extras["current_limit_fet"] is False
    assert snapshot.extras["current_event_2"] == 0
    assert snapshot.extras["status_flags"] == 0
    assert snapshot.extras["hard_faults"] == 0
    assert snapshot.extras["cell_low_voltage_mask"] == 0
    assert snapshot.extras["cell_high_voltage_mask"] == 0


def test_pic_with_every_alarm_byte_set() -> None:
    snapshot = decode(SEPLOS, [PIA, PIB, _pic(tb=EIC_ALL)], timestamp=0.0)
    assert snapshot.alarms == {
        Alarm.CELL_OVERVOLTAGE,
        Alarm.CELL_UNDERVOLTAGE,
        Alarm.PACK_OVERVOLTAGE,
        Alarm.PACK_UNDERVOLTAGE,
        Alarm.CHARGE_OVERTEMPERATURE,
        Alarm.CHARGE_UNDERTEMPERATURE,
        Alarm.DISCHARGE_OVERTEMPERATURE,
        Alarm.DISCHARGE_UNDERTEMPERATURE,
        Alarm.MOSFET_OVERTEMPERATURE,
        Alarm.CHARGE_OVERCURRENT,
        Alarm.DISCHARGE_OVERCURRENT,
        Alarm.SHORT_CIRCUIT,
        Alarm.LOW_SOC,
        Alarm.CELL_IMBALANCE,
        Alarm.TEMPERATURE_SENSOR_FAULT,
        Alarm.FRONT_END_FAULT,
        Alarm.CHARGE_MOSFET_FAULT,
        Alarm.DISCHARGE_MOSFET_FAULT,
    }
    assert snapshot.extras["current_event_2"] == 0xFF
    assert snapshot.extras["status_flags"] == 0xFF
    assert snapshot.extras["hard_faults"] == 0xFF


_BITS = [
    ("tb02", 0, Alarm.CELL_OVERVOLTAGE),
    ("tb02", 1, Alarm.CELL_OVERVOLTAGE),
    ("tb02", 2, Alarm.CELL_UNDERVOLTAGE),
    ("tb02", 3, Alarm.CELL_UNDERVOLTAGE),
    ("tb02", 4, Alarm.PACK_OVERVOLTAGE),
    ("tb02", 5, Alarm.PACK_OVERVOLTAGE),
    ("tb02", 6, Alarm.PACK_UNDERVOLTAGE),
    ("tb02", 7, Alarm.PACK_UNDERVOLTAGE),
    ("tb03", 0, Alarm.CHARGE_OVERTEMPERATURE),
    ("tb03", 1, Alarm.CHARGE_OVERTEMPERATURE),
    ("tb03", 2, Alarm.CHARGE_UNDERTEMPERATURE),
    ("tb03", 3, Alarm.CHARGE_UNDERTEMPERATURE),
    ("tb03", 4, Alarm.DISCHARGE_OVERTEMPERATURE),
    ("tb03", 5, Alarm.DISCHARGE_OVERTEMPERATURE),
    ("tb03", 6, Alarm.DISCHARGE_UNDERTEMPERATURE),
    ("tb03", 7, Alarm.DISCHARGE_UNDERTEMPERATURE),
    ("tb04", 4, Alarm.MOSFET_OVERTEMPERATURE),
    ("tb04", 5, Alarm.MOSFET_OVERTEMPERATURE),
    ("tb05", 0, Alarm.CHARGE_OVERCURRENT),
    ("tb05", 1, Alarm.CHARGE_OVERCURRENT),
    ("tb05", 2, Alarm.CHARGE_OVERCURRENT),
    ("tb05", 3, Alarm.DISCHARGE_OVERCURRENT),
    ("tb05", 4, Alarm.DISCHARGE_OVERCURRENT),
    ("tb05", 5, Alarm.DISCHARGE_OVERCURRENT),
    ("tb05", 6, Alarm.SHORT_CIRCUIT),
    ("tb06", 2, Alarm.LOW_SOC),
    ("tb06", 3, Alarm.LOW_SOC),
    ("tb06", 4, Alarm.CELL_IMBALANCE),
    ("tb15", 0, Alarm.TEMPERATURE_SENSOR_FAULT),
    ("tb15", 1, Alarm.FRONT_END_FAULT),
    ("tb15", 2, Alarm.CHARGE_MOSFET_FAULT),
    ("tb15", 3, Alarm.DISCHARGE_MOSFET_FAULT),
    ("tb15", 4, Alarm.CELL_IMBALANCE),
]


@pytest.mark.parametrize(("table", "bit", "alarm"), _BITS)
def test_each_alarm_bit(table: str, bit: int, alarm: Alarm) -> None:
    snapshot = decode(SEPLOS, [PIA, PIB, _pic(tb=_tb(**{table: 1 << bit}))], timestamp=0.0)
    assert snapshot.alarms == {alarm}


@pytest.mark.parametrize(
    ("table", "bit"),
    [
        *(("tb04", 0), ("tb04", 1), ("tb04", 2), ("tb04", 3), ("tb04", 6), ("tb06", 0), ("tb06", 1)),
        *(("tb15", 5), ("tb15", 6), ("tb15", 7), ("tb16", 0), ("tb08", 0), ("tb09", 3)),
    ],
)
def test_bits_without_a_common_alarm_name_raise_none(table: str, bit: int) -> None:
    snapshot = decode(SEPLOS, [PIA, PIB, _pic(tb=_tb(**{table: 1 << bit}))], timestamp=0.0)
    assert snapshot.alarms == frozenset()


@pytest.mark.parametrize(
    ("tb07", "charge", "discharge", "limit", "heating"),
    [
        (0x00, False, False, False, False),
        (0x01, False, True, False, False),
        (0x02, True, False, False, False),
        (0x04, False, False, True, False),
        (0x08, False, False, False, True),
        (0x0F, True, True, True, True),
    ],
)
def test_fet_state_bits(tb07: int, charge: bool, discharge: bool, limit: bool, heating: bool) -> None:
    snapshot = decode(SEPLOS, [PIA, PIB, _pic(tb=_tb(tb07=tb07))], timestamp=0.0)
    assert snapshot.charge_enabled is charge
    assert snapshot.discharge_enabled is discharge
    assert snapshot.extras["current_limit_fet"] is limit
    assert snapshot.heating is heating


def test_cell_masks_and_balancing_cells() -> None:
    # Coils pack eight to a byte from bit 0: byte 6 bit 0 = cell 1, byte 7 bit 7 = cell 16.
    masks = bytes([0x01, 0x80, 0x02, 0x00, 0x00, 0x00, 0x05, 0x80])
    snapshot = decode(SEPLOS, [PIA, PIB, _pic(masks=masks)], timestamp=0.0)
    assert snapshot.balancing_cells == (1, 3, 16)
    assert snapshot.balancing is True
    assert snapshot.extras["cell_low_voltage_mask"] == 0x8001  # cells 1 and 16
    assert snapshot.extras["cell_high_voltage_mask"] == 0x0002  # cell 2


def test_a_smaller_pack_leaves_empty_slots_out() -> None:
    cells = b"".join(value.to_bytes(2, "big") for value in (3300, 3301, 3302, 3303)) + bytes(24)
    temperatures = (2981).to_bytes(2, "big") + (2991).to_bytes(2, "big") + bytes(4)
    pib = _frame(0x04, cells + temperatures + (2731).to_bytes(2, "big") * 4 + (3012).to_bytes(2, "big") * 2)
    snapshot = decode(SEPLOS, [PIA, pib], timestamp=0.0)
    assert snapshot.cell_voltages == pytest.approx([3.300, 3.301, 3.302, 3.303])
    assert snapshot.temperatures == pytest.approx([25.0, 26.0])
    assert snapshot.mosfet_temperature == pytest.approx(28.1)


def test_frames_reassemble_from_notifications_and_errors_are_skipped() -> None:
    exception = bytes([0x01, 0x84, 0x02])
    exception += crc16_modbus(exception).to_bytes(2, "little")  # Modbus exception "illegal address"
    assembler = SEPLOS.new_assembler()
    frames = []
    stream = exception + PIA + PIB + _pic()
    for start in range(0, len(stream), 20):
        frames += assembler.feed(stream[start : start + 20])
    assert [frame.key for frame in frames] == [0x0422, 0x0434, 0x0112]


def test_a_reply_of_another_block_is_not_decoded() -> None:
    with pytest.raises(DecodeError, match="none of the frames"):
        decode(SEPLOS, [_frame(0x04, bytes(20))], timestamp=0.0)  # 10 registers: no block this definition reads

"""LiTime / Redodo: the one status frame, every field.

Fixture: a captured 105-byte reply of an 8-cell 12 V battery published with patman15/aiobmsble
(tests/bms/test_redodo_bms.py); the expected values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.errors import FrameError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol

LITIME = get_protocol("litime")
CAPTURE = bytes.fromhex(
    "000065019355aa0046660000bc670000f50cf70cfc0cfb0cf80cf20cfa0cf50c0000000000000000000000000000000065faffff"
    "17001600feff00000000e91a0429000000000000000000000000000000000000000000000000410064000000030000005f010000a2"
)


def _with(offset: int, data: bytes) -> bytes:
    frame = bytearray(CAPTURE)
    frame[offset : offset + len(data)] = data
    frame[-1] = sum(frame[:-1]) & 0xFF
    return bytes(frame)


def test_request_checksum() -> None:
    (request,) = LITIME.requests
    assert request.frame == bytes.fromhex("00000401 1355AA17")
    assert request.frame[-1] == sum(request.frame[:-1]) & 0xFF


def test_every_field_of_the_capture() -> None:
    snapshot = decode(LITIME, [CAPTURE], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(26.182)
    assert snapshot.extras["cell_voltage_sum"] == pytest.approx(26.556)
    assert snapshot.current == pytest.approx(-1.435)
    assert snapshot.cell_voltages == pytest.approx([3.317, 3.319, 3.324, 3.323, 3.320, 3.314, 3.322, 3.317])
    assert snapshot.temperatures == pytest.approx([23.0, -2.0])
    assert snapshot.mosfet_temperature == 22.0  # offset 54 (aiobmsble counts it as a third cell sensor)
    assert snapshot.remaining_capacity == pytest.approx(68.89)
    assert snapshot.full_capacity == pytest.approx(105.0)
    assert snapshot.design_capacity == pytest.approx(105.0)
    assert snapshot.soc == 65
    assert snapshot.soh == 100
    assert snapshot.cycles == 3
    assert snapshot.heating is False
    assert snapshot.balancing is False
    assert snapshot.extras["protection_code"] == 0
    assert snapshot.alarms == frozenset()


def test_flags() -> None:
    snapshot = decode(LITIME, [_with(68, b"\x01")], timestamp=0.0)
    assert snapshot.heating is True
    assert decode(LITIME, [_with(84, b"\x04")], timestamp=0.0).balancing is True
    assert decode(LITIME, [_with(83, b"\x80")], timestamp=0.0).extras["protection_code"] == 1 << 63


@pytest.mark.parametrize(
    ("mask", "alarm"),
    [
        (0x0004, Alarm.CELL_OVERVOLTAGE),
        (0x0020, Alarm.CELL_UNDERVOLTAGE),
        (0x0040, Alarm.CHARGE_OVERCURRENT),
        (0x0080, Alarm.DISCHARGE_OVERCURRENT),
        (0x0100, Alarm.BATTERY_OVERTEMPERATURE),
        (0x0200, Alarm.BATTERY_OVERTEMPERATURE),
        (0x0400, Alarm.BATTERY_UNDERTEMPERATURE),
        (0x0800, Alarm.BATTERY_UNDERTEMPERATURE),
        (0x4000, Alarm.SHORT_CIRCUIT),
    ],
)
def test_documented_protection_bits(mask: int, alarm: Alarm) -> None:
    snapshot = decode(LITIME, [_with(76, mask.to_bytes(4, "little"))], timestamp=0.0)
    assert snapshot.alarms == {alarm}
    assert snapshot.extras["protection_code"] == mask


def test_undocumented_protection_bits_stay_in_the_raw_code_only() -> None:
    snapshot = decode(LITIME, [_with(76, (0x0001 | 0x1000).to_bytes(4, "little"))], timestamp=0.0)
    assert snapshot.alarms == frozenset()
    assert snapshot.extras["protection_code"] == 0x1001


def test_length_and_checksum_are_checked() -> None:
    with pytest.raises(FrameError):
        LITIME.check_frame(CAPTURE[:-2] + CAPTURE[-1:])
    with pytest.raises(FrameError, match="checksum"):
        LITIME.check_frame(CAPTURE[:-1] + b"\x00")

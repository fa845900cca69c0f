"""RoyPow: every field of the captured replies, the AT+STAT noise, the sign of the current, the protection word.

Fixtures: the replies of a 4-cell RoyPow battery published with patman15/aiobmsble
(tests/bms/test_roypow_bms.py), with the BLE module's "AT+STAT" glued to them as there; the expected
values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol

ROYPOW = get_protocol("roypow")
AT_STAT = b"AT+STAT\r\n"
CELLS = bytes.fromhex("ead1010fff020404040d2f0d2a0d290d2cf6f5")
STATUS = bytes.fromhex("ead1011aff0332002300000000043b3b3b3c00100000000c07000000eff5")
PACK = bytes.fromhex(
    "ead10139ff040160020002030001049a28050001069e24070001087f7d09ffff0a04d40b00164a700c25031700514505440d"
    "2e0d290d144e0000006ff5"
)


def _with_checksum(frame: bytearray) -> bytes:
    checksum = 0
    for byte in frame[3:-2]:
        checksum ^= byte
    frame[-2] = checksum
    return bytes(frame)


def test_requests_are_the_documented_frames() -> None:
    for request in ROYPOW.requests:
        assert request.reply is not None
        assert request.frame[:6] == bytes([0xEA, 0xD1, 0x01, 0x04, 0xFF, request.reply])
        assert request.frame[-2] == 0x04 ^ 0xFF ^ request.frame[5]


def test_every_field_through_the_assembler_with_the_module_noise() -> None:
    assembler = ROYPOW.new_assembler()
    chunks = [AT_STAT, AT_STAT + CELLS, STATUS + AT_STAT, AT_STAT, PACK]
    frames = [frame for chunk in chunks for frame in assembler.feed(chunk)]
    assert [frame.key for frame in frames] == [0x02, 0x03, 0x04]
    snapshot = decode(ROYPOW, frames, timestamp=0.0)
    assert snapshot.voltage == 13.48
    assert snapshot.current == 0.35
    assert snapshot.soc == 96
    assert snapshot.cycles == 2
    assert snapshot.cell_voltages == (3.375, 3.370, 3.369, 3.372)
    assert snapshot.temperatures == (19.0, 19.0, 19.0, 20.0)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.alarms == frozenset()
    assert snapshot.extras["problem_code"] == 0
    assert snapshot.remaining_capacity is None  # see docs/protocols/roypow.md


def test_bit_16_makes_the_current_negative() -> None:
    # aiobmsble's "update_dischrg" case.
    status = bytearray(STATUS)
    status[6] |= 0x01
    snapshot = decode(ROYPOW, [CELLS, _with_checksum(status), PACK], timestamp=0.0)
    assert snapshot.current == -0.35


@pytest.mark.parametrize(("offset", "byte", "raw"), [(11, 0x01, 1), (9, 0x80, 1 << 23)])
def test_protection_word_is_a_problem(offset: int, byte: int, raw: int) -> None:
    status = bytearray(STATUS)
    status[offset] = byte
    snapshot = decode(ROYPOW, [CELLS, _with_checksum(status), PACK], timestamp=0.0)
    assert snapshot.extras["problem_code"] == raw
    assert snapshot.alarms == {Alarm.SYSTEM_FAULT}


@pytest.mark.parametrize("name", [" B12100A123", " S24100B9", " UT12100"])
def test_advertised_names(name: str) -> None:
    assert ROYPOW.definition.matches_advertisement(
        name=name, address="12:34:56:78:9A:BC", service_uuids=["ffe0"], manufacturer_ids=[]
    )
    assert not ROYPOW.definition.matches_advertisement(
        name=name.strip(), address="12:34:56:78:9A:BC", service_uuids=["ffe0"], manufacturer_ids=[]
    )

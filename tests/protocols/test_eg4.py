"""EG4 LL: every field of the captured status read, and the 48-bit protection word.

Fixture: the status reply published with patman15/aiobmsble (tests/bms/test_eg4_bms.py, 4 cells,
discharging); the expected values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus

EG4 = get_protocol("eg4")
STATUS = bytes.fromhex(
    "01034e052cffc20cee0cf10ced0cf1000000000000000000000000000000000000000000000000001100110011000002ee0064"
    "00300002000000000000000000010000000011c80000000000040000000095a4"
)


def _with(offset: int, data: bytes) -> bytes:
    frame = bytearray(STATUS)
    frame[offset : offset + len(data)] = data
    frame[-2:] = crc16_modbus(bytes(frame[:-2])).to_bytes(2, "little")
    return bytes(frame)


def test_request_is_a_modbus_read_of_39_registers() -> None:
    (request,) = EG4.requests
    assert request.frame[:6] == bytes.fromhex("010300000027")
    assert request.frame[-2:] == crc16_modbus(request.frame[:-2]).to_bytes(2, "little")


def test_every_field_of_the_capture() -> None:
    snapshot = decode(EG4, [STATUS], timestamp=0.0)
    assert snapshot.voltage == 13.24
    assert snapshot.current == -6.2
    assert snapshot.soc == 48
    assert snapshot.soh == 100
    assert snapshot.cycles == 1
    assert snapshot.cell_voltages == (3.31, 3.313, 3.309, 3.313)
    assert snapshot.extras["pcb_temperature"] == 17
    # aiobmsble lists the six cell sensors as 17, -56, 0, 0, 0, 0: the empty and the unfitted ones drop.
    assert snapshot.temperatures == (17.0,)
    assert snapshot.remaining_capacity is None  # 0 in the recording
    assert snapshot.balancing is False
    assert snapshot.alarms == frozenset()


@pytest.mark.parametrize(("offset", "byte", "high", "low"), [(60, 0x01, 0, 1), (55, 0x80, 0x8000, 0)])
def test_protection_word_is_a_problem(offset: int, byte: int, high: int, low: int) -> None:
    # aiobmsble's "first_bit" (problem code 1) and "last_bit" (2**47) cases.
    snapshot = decode(EG4, [_with(offset, bytes([byte]))], timestamp=0.0)
    assert (snapshot.extras["problem_code_high"], snapshot.extras["problem_code"]) == (high, low)
    assert snapshot.alarms == {Alarm.SYSTEM_FAULT}

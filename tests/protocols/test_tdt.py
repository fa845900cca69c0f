"""TDT / Wattcycle: every field of three captured packs (4S 4 sensors, 16S 6 sensors, firmware 0.0 and 0.4).

Fixtures: the replies published with patman15/aiobmsble (tests/bms/test_tdt_bms.py: "4S4Tv0.0",
"16S6Tv0.0", "16S6Tv0.4"); the expected values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.errors import FrameError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus

TDT = get_protocol("tdt")
VALUES_4S = bytes.fromhex("7e000103008c0020040ce10cdf0ce10cdc040b930b9b0b8d0b8c40000526023f041c000803e8003791910d")
STATES_4S = bytes.fromhex("7e004103008d0018040000000004000000000000000000000609000018000000df680d")
IDENTITY_16S = bytes.fromhex(
    "7e0001030092003c363033325f3130303136533030305f4c5f34310000000000000000000000000000000000000000003630"
    "33323630313632303732373030303100000050010d"
)
VALUES_16S = bytes.fromhex(
    "7e000103008c003c100ce30ce60cde0cde0cdd0cde0cdd0cdc0cdc0cda0cde0cde0cde0cdd0cdf0cde060b5e0b6f0b5e0b5e"
    "0b5e0b66c039149603df043b000803e8005b2b9c0d"
)
STATES_16S = bytes.fromhex(
    "7e000103008d00271000000000000000000000000000000000060000000000000000000200000e01000018000000000b7b0d"
)
VALUES_16S_V04 = bytes.fromhex(
    "7e040103008c003c100cb20cb80cb50cb80cb40cb60cb80cb90cb50cb90cb90cb90cba0cb70cb70cb8060ba90ba60bb80bae"
    "0bc20bbbc0a21460028504fa00d504b000332fb40d"
)
STATES_16S_V04 = bytes.fromhex(
    "7e040103008d00271000000000000000000000000000000000060000000000000000000200000efe000000000000003f560d"
)


def _patched(frame: bytes, offset: int, data: bytes) -> bytes:
    patched = bytearray(frame)
    patched[offset : offset + len(data)] = data
    patched[-3:-1] = crc16_modbus(bytes(patched[:-3])).to_bytes(2, "big")
    return bytes(patched)


def test_requests_are_the_documented_frames() -> None:
    for request in TDT.requests:
        assert request.reply is not None
        assert request.frame[:6] == bytes([0x7E, 0x00, 0x01, 0x03, 0x00, request.reply])
        assert request.frame[-3:-1] == crc16_modbus(request.frame[:-3]).to_bytes(2, "big")


def test_16s_capture_with_identity() -> None:
    snapshot = decode(TDT, [IDENTITY_16S, VALUES_16S, STATES_16S], timestamp=0.0)
    assert snapshot.voltage == 52.7
    assert snapshot.current == -5.7
    assert snapshot.soc == 91
    assert snapshot.remaining_capacity == 99.1
    assert snapshot.cycles == 8
    assert snapshot.cell_voltages == (
        3.299, 3.302, 3.294, 3.294, 3.293, 3.294, 3.293, 3.292, 3.292, 3.290, 3.294, 3.294, 3.294, 3.293, 3.295,
        3.294,
    )  # fmt: skip
    # aiobmsble's six sensors, typed: ambient 17.9, MOSFET 19.6, cells 17.9 17.9 17.9 18.7.
    assert snapshot.extras["ambient_temperature"] == 17.9
    assert snapshot.mosfet_temperature == 19.6
    assert snapshot.temperatures == (17.9, 17.9, 17.9, 18.7)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.alarms == frozenset()
    assert snapshot.extras["problem_code"] == 0
    assert snapshot.device.software_version == "6032_10016S000_L_41"
    assert snapshot.device.serial_number == "60326016207270001"


def test_4s_capture() -> None:
    snapshot = decode(TDT, [VALUES_4S, STATES_4S], timestamp=0.0)
    assert snapshot.voltage == 13.18
    assert snapshot.current == 0.0
    assert snapshot.soc == 55
    assert snapshot.remaining_capacity == 57.5
    assert snapshot.cycles == 8
    assert snapshot.cell_voltages == (3.297, 3.295, 3.297, 3.292)
    assert snapshot.extras["ambient_temperature"] == 23.2
    assert snapshot.mosfet_temperature == 24.0
    assert snapshot.temperatures == (22.6, 22.5)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True


def test_firmware_0_4_capture() -> None:
    snapshot = decode(TDT, [VALUES_16S_V04, STATES_16S_V04], timestamp=0.0)
    assert snapshot.voltage == 52.16
    assert snapshot.current == -16.2
    assert snapshot.soc == 51
    assert snapshot.remaining_capacity == 64.5
    assert snapshot.cycles == 213
    assert snapshot.cell_voltages[:3] == (3.25, 3.256, 3.253)
    assert snapshot.extras["ambient_temperature"] == 25.4
    assert snapshot.mosfet_temperature == 25.1
    assert snapshot.temperatures == (26.9, 25.9, 27.9, 27.2)


@pytest.mark.parametrize(("word", "raw"), [(b"\x00\x01", 0x0001), (b"\x80\x00", 0x8000)])
def test_protection_word_is_a_problem(word: bytes, raw: int) -> None:
    # aiobmsble's "first_bit_4cell" / "last_bit_4cell" cases: payload offset cells + sensors + 6.
    states = _patched(STATES_4S, 8 + 4 + 4 + 6, word)
    snapshot = decode(TDT, [VALUES_4S, states], timestamp=0.0)
    assert snapshot.extras["problem_code"] == raw
    assert snapshot.alarms == {Alarm.SYSTEM_FAULT}


@pytest.mark.parametrize(("raw", "amps"), [(0xC039, -5.7), (0x4039, 5.7), (0x0000, 0.0), (0xBFFF, -1638.3)])
def test_current_is_sign_and_magnitude(raw: int, amps: float) -> None:
    values = _patched(VALUES_4S, 8 + 1 + 8 + 1 + 8, raw.to_bytes(2, "big"))
    assert decode(TDT, [values, STATES_4S], timestamp=0.0).current == amps


def test_error_code_and_checksum_are_checked() -> None:
    assert TDT.check_frame(_patched(VALUES_4S, 4, b"\x01")).status_ok is False
    with pytest.raises(FrameError, match="checksum"):
        TDT.check_frame(VALUES_4S[:-3] + b"\x00\x00\x0d")

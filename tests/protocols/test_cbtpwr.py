"""CBT Power: every field of the 5-cell capture, the 20-cell capture, the warning word.

Fixtures: the replies published with patman15/aiobmsble (tests/bms/test_cbtpwr_bms.py, its 5-cell
default and 20-cell "all cells" mocks); the expected values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol

CBT = get_protocol("cbtpwr")
CELLS_1_5 = bytes.fromhex("aa55050a0b0d0b0d0a0d0a0d0d09830d0a")
CELLS_6_10 = bytes.fromhex("aa55060a00000000000000000000100d0a")
TEMPERATURES = bytes.fromhex("aa55090cfefffeff00000000000000000f0d0a")
VOLTAGE_CURRENT = bytes.fromhex("aa550b0858340000bcf3ffff4c0d0a")
SOC = bytes.fromhex("aa550a0664130d000000940d0a")
CAPACITY_CYCLES = bytes.fromhex("aa55150428000300440d0a")
WARNINGS = bytes.fromhex("aa55210400000000250d0a")
ALL_CELLS = {
    0x05: bytes.fromhex("aa55050a0b0d0a0d090d080d070d7d0d0a"),
    0x06: bytes.fromhex("aa55060a060d050d040d030d020d650d0a"),
    0x07: bytes.fromhex("aa55070a010d000dff0cfe0cfd0c4a0d0a"),
    0x08: bytes.fromhex("aa55080afc0cfb0cfa0cf90cf80c300d0a"),
    0x09: bytes.fromhex("aa55090c1500150000000000000000003f0d0a"),
    0x0B: bytes.fromhex("aa550b0858340000000000009f0d0a"),
}
"""The 20-cell pack of the same test suite (cells 3.339 V down to 3.320 V, 21 °C, no current)."""


def _warnings(word: int) -> bytes:
    frame = bytearray(WARNINGS)
    frame[4:8] = word.to_bytes(4, "little")
    frame[-3] = sum(frame[2:-3]) & 0xFF
    return bytes(frame)


def test_requests_are_checked_and_end_with_0a_0d() -> None:
    for request in CBT.requests:
        assert request.reply is not None
        assert request.frame[:3] == bytes([0xAA, 0x55, request.reply])
        assert request.frame[-3:] == bytes([request.reply, 0x0A, 0x0D])  # no data: the sum is the command


def test_five_cell_capture() -> None:
    frames = [VOLTAGE_CURRENT, SOC, TEMPERATURES, CAPACITY_CYCLES, WARNINGS, CELLS_1_5, CELLS_6_10]
    snapshot = decode(CBT, frames, timestamp=0.0)
    assert snapshot.voltage == 13.4
    assert snapshot.current == -3.14
    assert snapshot.soc == 100
    assert snapshot.cycles == 3
    assert snapshot.design_capacity == 40
    assert snapshot.cell_voltages == (3.339, 3.339, 3.338, 3.338, 2.317)
    assert snapshot.temperatures == (-2.0, -2.0)  # aiobmsble states only the first slot
    assert snapshot.alarms == frozenset()
    assert snapshot.extras["problem_code"] == 0


def test_twenty_cell_capture() -> None:
    frames = [ALL_CELLS[0x0B], SOC, ALL_CELLS[0x09], CAPACITY_CYCLES, WARNINGS] + [
        ALL_CELLS[key] for key in (0x05, 0x06, 0x07, 0x08)
    ]
    snapshot = decode(CBT, frames, timestamp=0.0)
    assert snapshot.cell_voltages == tuple(round(3.339 - 0.001 * index, 3) for index in range(20))
    assert snapshot.temperatures == (21.0, 21.0)
    assert snapshot.current == 0.0


@pytest.mark.parametrize("word", [1, 1 << 31])
def test_warning_word_is_a_problem(word: int) -> None:
    frames = [VOLTAGE_CURRENT, SOC, TEMPERATURES, CAPACITY_CYCLES, _warnings(word), CELLS_1_5]
    snapshot = decode(CBT, frames, timestamp=0.0)
    assert snapshot.extras["problem_code"] == word
    assert snapshot.alarms == {Alarm.SYSTEM_FAULT}

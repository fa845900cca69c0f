"""Tian Power: every field of the 20-byte frames.

Fixtures: captured replies of a TP-LT55 16-cell pack published with patman15/aiobmsble
(tests/bms/test_tianpwr_bms.py); the expected values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.errors import FrameError
from bmsgate.protocols import decode, get_protocol

TIAN = get_protocol("tianpower")
CAPTURE = [
    bytes.fromhex(text)
    for text in (
        "551481302e312e313000000000000000000000aa",
        "55148254502d4c543535005442000000000000aa",
        "551483003c1562011800e600fa000030300064aa",
        "551484100459d8364800000000000000000000aa",
        "55148508230000000000000000000000000000aa",
        "55148700e600e600e600e60000000000000000aa",
        "5514880d570d5b0d5b0d5e0d5d0d5e0d610d60aa",
        "5514890d5d0d610d5d0d5d0d5e0d5c0d5e0d65aa",
    )
]


def test_requests() -> None:
    for request in TIAN.requests:
        assert request.frame[:2] == b"\x55\x04"
        assert request.frame[-1] == 0xAA
        assert request.frame[2] == request.reply


def test_every_field_of_the_capture() -> None:
    snapshot = decode(TIAN, CAPTURE, timestamp=0.0)
    assert snapshot.soc == 60
    assert snapshot.voltage == pytest.approx(54.74)
    assert snapshot.current == pytest.approx(0.0)
    assert snapshot.soh == 100
    assert snapshot.mosfet_temperature == pytest.approx(25.0)
    assert snapshot.extras["ambient_temperature"] == pytest.approx(23.0)
    assert snapshot.full_capacity == pytest.approx(230.0)
    assert snapshot.remaining_capacity == pytest.approx(138.96)
    assert snapshot.cycles == 0
    assert snapshot.extras["problem_code"] == 0
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.balancing is False
    assert snapshot.temperatures == pytest.approx([23.0] * 4)
    assert snapshot.cell_voltages == pytest.approx(
        [3.415, 3.419, 3.419, 3.422, 3.421, 3.422, 3.425, 3.424, 3.421, 3.425, 3.421, 3.421, 3.422, 3.42, 3.422, 3.429]
    )
    assert snapshot.device.software_version == "0.1.10"
    assert snapshot.device.model == "TP-LT55"


def test_eight_cell_pack_without_the_second_cell_frame() -> None:
    frames = [frame for frame in CAPTURE if frame[2] != 0x89]
    frames[3] = bytes.fromhex("551484080459d8364800000000000000000000aa")  # 8 cells
    assert decode(TIAN, frames, timestamp=0.0).cell_count == 8


@pytest.mark.parametrize(
    "frame",
    [
        "511483" + "00" * 16 + "aa",  # start
        "551483" + "00" * 16 + "a1",  # end
        "551583" + "00" * 16 + "aa",  # length byte
    ],
)
def test_malformed_frames(frame: str) -> None:
    with pytest.raises(FrameError):
        TIAN.check_frame(bytes.fromhex(frame))

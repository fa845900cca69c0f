"""ANT legacy protocol: every field of two captured 140-byte status frames.

Fixtures: the frames published with patman15/aiobmsble (tests/bms/test_ant_leg_bms.py: the default
16-cell frame and the "with design capacity" 14-cell frame); the expected values are the ones stated
there.
"""

from __future__ import annotations

import pytest

from bmsgate.errors import FrameError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol

ANT_LEG = get_protocol("ant-leg")
STATUS_16S = bytes.fromhex(
    "aa55aaff021e0d0a0d0b0d0b0d0b0d550d3f0d6c0d480d880d760d460db20d0b0d0b0d0b0d0b000000000000000000000000"
    "000000000000000000000000000000000000000000000000640000000008581e020b3879530a13fbf3001a001dfffb001500"
    "0000000201020000000000000000000c0db2010d0a0d3910ffef00800000000000000b5034090f0d"
)
STATUS_14S = bytes.fromhex(
    "aa55aaff01e80daa0d9c0da40d8e0d9c0d900db40d970db50db50da80d910d9e0d8c00000000000000000000000000000000"
    "000000000000000000000000000000000000000000000050290a21fe800419589300a9840f00fa0831001600150015001500"
    "15001501010003e800170000000186090db50e0d8c0d9f0e00000070006b02ac00000000400115f4"
)


def test_request() -> None:
    (request,) = ANT_LEG.requests
    assert request.frame == bytes.fromhex("DBDB00000000")


def test_16_cell_frame() -> None:
    snapshot = decode(ANT_LEG, [STATUS_16S], timestamp=0.0)
    assert snapshot.voltage == 54.2
    assert snapshot.current == 0.0
    assert snapshot.soc == 100
    assert snapshot.remaining_capacity == 139.992578
    assert snapshot.design_capacity is None  # 0 in this frame (aiobmsble estimates 140 from SoC)
    assert snapshot.cell_voltages == (
        3.338, 3.339, 3.339, 3.339, 3.413, 3.391, 3.436, 3.4, 3.464, 3.446, 3.398, 3.506, 3.339, 3.339, 3.339, 3.339,
    )  # fmt: skip
    assert snapshot.temperatures == (26.0, 29.0, -5.0, 21.0)
    assert snapshot.extras["total_charge"] == 188250.451
    assert snapshot.charge_enabled is False
    assert snapshot.discharge_enabled is True
    assert snapshot.balancing is False
    # aiobmsble: problem, problem code 512 (charge status 2).
    assert snapshot.extras["charge_mosfet_status"] == 2
    assert snapshot.alarms == {Alarm.SYSTEM_FAULT}


def test_14_cell_frame_with_design_capacity() -> None:
    snapshot = decode(ANT_LEG, [STATUS_14S], timestamp=0.0)
    assert snapshot.voltage == 48.8
    assert snapshot.current == -8.0
    assert snapshot.soc == 41
    assert snapshot.design_capacity == 170.0
    assert snapshot.remaining_capacity == 68.769939
    assert snapshot.cell_count == 14
    assert snapshot.cell_voltages[:3] == (3.498, 3.484, 3.492)
    assert snapshot.temperatures == (22.0, 21.0, 21.0, 21.0)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.alarms == frozenset()


@pytest.mark.parametrize("frame", [STATUS_16S[:-2] + b"\xff\xff", STATUS_16S + b"\xff"])
def test_checksum_and_length_are_checked(frame: bytes) -> None:
    with pytest.raises(FrameError):
        ANT_LEG.check_frame(frame)

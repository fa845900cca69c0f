"""NEEY balancer: IEEE 754 floats, of which NaN and infinities mean "no value" (engine 5).

Frames: patman15/aiobmsble tests/bms/test_neey_bms.py (``family_frames.NEEY``), whose stated values
test_families.py checks; here what a float slot without a value does.
"""

from __future__ import annotations

import math
import struct

import pytest

from bmsgate.protocols import get_protocol

from .family_frames import NEEY

PROTOCOL = get_protocol("neey")
CELL_INFO = NEEY.replies["cell_info"][0]


def _with_float(frame: bytes, at: int, value: float) -> bytes:
    """The frame with one little-endian f32 replaced and its sum-8 checksum refreshed."""
    edited = bytearray(frame)
    edited[at : at + 4] = struct.pack("<f", value)
    edited[-2] = sum(edited[:-2]) & 0xFF
    return bytes(edited)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_pack_voltage_is_no_value(value: float) -> None:
    snapshot = PROTOCOL.decode([_with_float(CELL_INFO, 201, value)], timestamp=0.0)
    assert snapshot.voltage is None
    assert snapshot.cell_count == 16  # the rest of the frame still decodes


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_cell_is_dropped_like_an_absent_one(value: float) -> None:
    intact = PROTOCOL.decode([CELL_INFO], timestamp=0.0)
    snapshot = PROTOCOL.decode([_with_float(CELL_INFO, 9 + 4 * 2, value)], timestamp=0.0)  # cell 3
    assert snapshot.cell_voltages == intact.cell_voltages[:2] + intact.cell_voltages[3:]
    assert all(math.isfinite(value) for value in snapshot.cell_voltages)


def test_a_non_finite_extra_is_left_out() -> None:
    snapshot = PROTOCOL.decode([_with_float(CELL_INFO, 209, math.nan)], timestamp=0.0)
    assert "cell_delta" not in snapshot.extras

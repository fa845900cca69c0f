"""The real JK and Daly frames of public_frames.py decode to the values their publisher states."""

from __future__ import annotations

import pytest

from bmsgate.protocols import get_protocol

from .public_frames import DALY_DEVICE_INFO, DALY_MOSFET_TEMPERATURE, DALY_STATUS, JK_V15_CELL_INFO, JK_V15_DEVICE_INFO


def test_jk_v15_capture() -> None:
    snapshot = get_protocol("jk").decode([JK_V15_DEVICE_INFO, JK_V15_CELL_INFO], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(53.224)
    assert snapshot.current == pytest.approx(31.881)
    assert snapshot.soc == 25
    assert snapshot.cycles == 9
    assert snapshot.cell_count == 16
    assert snapshot.device.software_version == "15.38"
    assert snapshot.device.model == "JK_PB2A16S20P"
    # aiobmsble states 16.367 °C: the mean of the five sensors and the MOSFET.
    assert snapshot.mosfet_temperature is not None
    mean = (sum(snapshot.temperatures) + snapshot.mosfet_temperature) / (len(snapshot.temperatures) + 1)
    assert mean == pytest.approx(16.367, abs=0.001)


def test_daly_capture() -> None:
    snapshot = get_protocol("daly").decode([DALY_DEVICE_INFO, DALY_MOSFET_TEMPERATURE, DALY_STATUS], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(14.0)
    assert snapshot.current == pytest.approx(3.0)
    assert snapshot.soc == 90
    assert snapshot.cycles == 57
    assert snapshot.remaining_capacity == pytest.approx(345.6)
    assert snapshot.cell_voltages == pytest.approx((4.127, 4.137, 4.147, 4.157))
    assert snapshot.temperatures == pytest.approx((20.0, 21.0, 22.0, 23.0))
    assert snapshot.mosfet_temperature == pytest.approx(38.0)
    assert (snapshot.charge_enabled, snapshot.discharge_enabled) == (False, True)
    assert snapshot.device.hardware_version == "H2.0_103R_309F9F"
    assert snapshot.device.software_version == "T00K_321042_11"

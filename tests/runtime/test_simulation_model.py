"""The simulated pack's cheaper arithmetic gives the values it always gave."""

from __future__ import annotations

import bisect
import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from bmsgate.runtime.simulation import _LFP_SOC, _LFP_VOLTS, PackConfig, PackModel, lfp_open_circuit_voltage


def _interpolated(soc: float) -> float:
    """The open-circuit curve as it was computed per call, every span subtracted again."""
    soc = min(max(soc, 0.0), 100.0)
    index = bisect.bisect_right(_LFP_SOC, soc)
    if index >= len(_LFP_SOC):
        return _LFP_VOLTS[-1]
    low_soc, high_soc = _LFP_SOC[index - 1], _LFP_SOC[index]
    low_v, high_v = _LFP_VOLTS[index - 1], _LFP_VOLTS[index]
    return low_v + (high_v - low_v) * (soc - low_soc) / (high_soc - low_soc)


@given(st.floats(min_value=-20.0, max_value=120.0) | st.sampled_from(_LFP_SOC))
def test_the_open_circuit_curve_is_the_per_call_interpolation(soc: float) -> None:
    assert lfp_open_circuit_voltage(soc) == _interpolated(soc)


@given(seed=st.integers(0, 50), seconds=st.floats(0.0, 50000.0))
def test_cell_voltages_are_the_curve_plus_the_resistive_drop(seed: int, seconds: float) -> None:
    pack = PackModel(PackConfig(cells=16, seed=seed, drift_cell=3, drift_rate=100.0))
    pack.advance(seconds)
    drop = pack.current * 0.0015
    assert pack.cell_voltages() == [_interpolated(pack.soc + offset) + drop for offset in pack.cell_offsets]


def test_the_configured_part_of_the_state_follows_a_new_configuration() -> None:
    pack = PackModel(PackConfig(cells=16, name="first"))
    assert pack.state()["device.name"] == "first"
    pack.config = dataclasses.replace(pack.config, name="second", capacity=50.0)
    state = pack.state()
    assert (state["device.name"], state["device.model"], state["full_capacity"]) == ("second", "SIM-16S50", 50.0)

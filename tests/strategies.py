"""Hypothesis strategies for arbitrary valid snapshots (shared by the model and schema tests)."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo

# Physically plausible magnitudes: derived values (power, runtimes) of 1e308 would overflow to inf.
_finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
_optional_float = st.none() | _finite
_optional_text = st.none() | st.text(max_size=12)

device_infos = st.builds(
    DeviceInfo,
    manufacturer=_optional_text,
    model=_optional_text,
    name=_optional_text,
    hardware_version=_optional_text,
    software_version=_optional_text,
    serial_number=_optional_text,
    production_date=st.none() | st.dates(min_value=dt.date(1, 1, 1)),
)

_extras = st.dictionaries(
    st.text(max_size=10),
    st.booleans() | st.integers(-(2**63), 2**64) | _finite | st.text(max_size=10),
    max_size=4,
)

snapshots = st.builds(
    BatterySnapshot,
    battery_id=st.text(max_size=12),
    timestamp=_finite,
    protocol=st.text(max_size=8),
    voltage=_optional_float,
    current=_optional_float,
    soc=_optional_float,
    soh=_optional_float,
    remaining_capacity=_optional_float,
    full_capacity=_optional_float,
    design_capacity=_optional_float,
    cycles=st.none() | st.integers(0, 2**32),
    cell_voltages=st.lists(_finite, max_size=24).map(tuple),
    temperatures=st.lists(_finite, max_size=6).map(tuple),
    mosfet_temperature=_optional_float,
    alarms=st.frozensets(st.sampled_from(Alarm)),
    charge_enabled=st.none() | st.booleans(),
    discharge_enabled=st.none() | st.booleans(),
    balancing=st.none() | st.booleans(),
    balancing_cells=st.none() | st.lists(st.integers(1, 32), unique=True, max_size=8).map(lambda c: tuple(sorted(c))),
    balance_current=_optional_float,
    heating=st.none() | st.booleans(),
    device=device_infos,
    extras=_extras,
)

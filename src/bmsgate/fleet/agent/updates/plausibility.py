"""Whether a decoded snapshot is physically plausible: the health check's test of a new protocol definition.

The bounds are wide on purpose (any lithium chemistry, any climate a gateway sits in): they catch a
definition that decodes the wrong bytes or with the wrong scale, not a battery in a bad state.
"""

from __future__ import annotations

from typing import Final

from bmsgate.model import BatterySnapshot

__all__ = ["CELL_VOLTS", "SOC_PERCENT", "TEMPERATURE_C", "implausibility"]

SOC_PERCENT: Final = (0.0, 100.0)
CELL_VOLTS: Final = (1.5, 5.0)
TEMPERATURE_C: Final = (-40.0, 100.0)
_PACK_TOLERANCE: Final = 0.1
"""Pack voltage and the sum of the cells may differ by 10 % (plus half a volt: shunt, wiring, rounding)."""


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def implausibility(snapshot: BatterySnapshot) -> str | None:
    """The first implausible value of `snapshot`, described (None: nothing implausible)."""
    if snapshot.soc is not None and _outside(snapshot.soc, SOC_PERCENT):
        return f"soc {snapshot.soc:g} % outside {SOC_PERCENT[0]:g}..{SOC_PERCENT[1]:g}"
    for number, volts in enumerate(snapshot.cell_voltages, start=1):
        if _outside(volts, CELL_VOLTS):
            return f"cell {number} at {volts:g} V outside {CELL_VOLTS[0]:g}..{CELL_VOLTS[1]:g}"
    temperatures = [*snapshot.temperatures]
    if snapshot.mosfet_temperature is not None:
        temperatures.append(snapshot.mosfet_temperature)
    for celsius in temperatures:
        if _outside(celsius, TEMPERATURE_C):
            return f"temperature {celsius:g} degC outside {TEMPERATURE_C[0]:g}..{TEMPERATURE_C[1]:g}"
    if snapshot.voltage is not None and snapshot.cell_voltages:
        cells = sum(snapshot.cell_voltages)
        if abs(cells - snapshot.voltage) > _PACK_TOLERANCE * max(cells, snapshot.voltage) + 0.5:
            return f"pack voltage {snapshot.voltage:g} V but its cells add up to {cells:.2f} V"
    return None

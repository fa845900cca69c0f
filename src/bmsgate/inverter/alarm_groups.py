"""Which BMS alarms an inverter protocol's coarser flags stand for (one table for CAN and RS485).

Inverter protocols carry a handful of flags ("high temperature", "system error"); each is raised by any
alarm of its group. Keeping the groups in one place means two outputs can never disagree on what a
flag covers.
"""

from __future__ import annotations

from typing import Final

from bmsgate.model import Alarm

__all__ = [
    "BATTERY_HIGH_TEMPERATURE",
    "CHARGE_CURRENT",
    "DISCHARGE_CURRENT",
    "HIGH_TEMPERATURE",
    "HIGH_VOLTAGE",
    "LOW_TEMPERATURE",
    "LOW_VOLTAGE",
    "SHORT_CIRCUIT",
    "SYSTEM",
    "SYSTEM_FAULTS",
    "any_of",
]

HIGH_VOLTAGE: Final = frozenset({Alarm.CELL_OVERVOLTAGE, Alarm.PACK_OVERVOLTAGE})
LOW_VOLTAGE: Final = frozenset({Alarm.CELL_UNDERVOLTAGE, Alarm.PACK_UNDERVOLTAGE})
BATTERY_HIGH_TEMPERATURE: Final = frozenset(
    {Alarm.BATTERY_OVERTEMPERATURE, Alarm.CHARGE_OVERTEMPERATURE, Alarm.DISCHARGE_OVERTEMPERATURE}
)
"""Over-temperature of the cells (not of the MOSFETs)."""
HIGH_TEMPERATURE: Final = BATTERY_HIGH_TEMPERATURE | {Alarm.MOSFET_OVERTEMPERATURE}
LOW_TEMPERATURE: Final = frozenset(
    {Alarm.BATTERY_UNDERTEMPERATURE, Alarm.CHARGE_UNDERTEMPERATURE, Alarm.DISCHARGE_UNDERTEMPERATURE}
)
SHORT_CIRCUIT: Final = frozenset({Alarm.SHORT_CIRCUIT, Alarm.CHARGE_SHORT_CIRCUIT, Alarm.DISCHARGE_SHORT_CIRCUIT})
DISCHARGE_CURRENT: Final = frozenset({Alarm.DISCHARGE_OVERCURRENT, Alarm.DISCHARGE_SHORT_CIRCUIT, Alarm.SHORT_CIRCUIT})
CHARGE_CURRENT: Final = frozenset({Alarm.CHARGE_OVERCURRENT, Alarm.CHARGE_SHORT_CIRCUIT})
SYSTEM_FAULTS: Final = frozenset(
    {
        Alarm.SYSTEM_FAULT,
        Alarm.FRONT_END_FAULT,
        Alarm.CURRENT_SENSOR_FAULT,
        Alarm.TEMPERATURE_SENSOR_FAULT,
        Alarm.CHARGE_MOSFET_FAULT,
        Alarm.DISCHARGE_MOSFET_FAULT,
        Alarm.MOSFET_SOFTWARE_LOCK,
        Alarm.CELL_COUNT_MISMATCH,
    }
)
"""Faults of the BMS hardware or firmware."""
SYSTEM: Final = SYSTEM_FAULTS | {Alarm.INTERNAL_COMMUNICATION_FAULT}
"""Faults plus a pack that lost its internal link: where a protocol has one "system error" flag for both."""


def any_of(alarms: frozenset[Alarm], group: frozenset[Alarm]) -> bool:
    """Whether any alarm of `group` is raised."""
    return not alarms.isdisjoint(group)

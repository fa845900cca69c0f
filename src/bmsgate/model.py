"""The one snapshot type every part of bmsgate speaks: `BatterySnapshot` and its companions.

Units are SI throughout (V, A, Ah, Wh, W, °C, %, s). `None` always means "this BMS does not report it",
never zero. Current is positive while charging. Every derived value (power, cell statistics, mean
temperature, runtimes, stored energy) is computed here and nowhere else.

The JSON form returned by :meth:`BatterySnapshot.to_dict` is a stable, documented contract
(docs/snapshot-json.md); it only ever gains keys within one ``schema`` version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "SNAPSHOT_SCHEMA_VERSION",
    "PackQuantities",
    "Alarm",
    "BatterySnapshot",
    "CellStat",
    "DeviceInfo",
    "ExtraValue",
]

SNAPSHOT_SCHEMA_VERSION: Final = 1

ExtraValue = float | int | str | bool


class Alarm(enum.StrEnum):
    """Vendor-neutral alarm and protection vocabulary; the value is the JSON name."""

    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    PACK_OVERVOLTAGE = "pack_overvoltage"
    PACK_UNDERVOLTAGE = "pack_undervoltage"
    CELL_IMBALANCE = "cell_imbalance"
    CELL_COUNT_MISMATCH = "cell_count_mismatch"
    CHARGE_OVERTEMPERATURE = "charge_overtemperature"
    CHARGE_UNDERTEMPERATURE = "charge_undertemperature"
    DISCHARGE_OVERTEMPERATURE = "discharge_overtemperature"
    DISCHARGE_UNDERTEMPERATURE = "discharge_undertemperature"
    BATTERY_OVERTEMPERATURE = "battery_overtemperature"
    BATTERY_UNDERTEMPERATURE = "battery_undertemperature"
    MOSFET_OVERTEMPERATURE = "mosfet_overtemperature"
    TEMPERATURE_SENSOR_FAULT = "temperature_sensor_fault"
    CHARGE_OVERCURRENT = "charge_overcurrent"
    DISCHARGE_OVERCURRENT = "discharge_overcurrent"
    SHORT_CIRCUIT = "short_circuit"
    CHARGE_SHORT_CIRCUIT = "charge_short_circuit"
    DISCHARGE_SHORT_CIRCUIT = "discharge_short_circuit"
    CURRENT_SENSOR_FAULT = "current_sensor_fault"
    FRONT_END_FAULT = "front_end_fault"
    INTERNAL_COMMUNICATION_FAULT = "internal_communication_fault"
    MOSFET_SOFTWARE_LOCK = "mosfet_software_lock"
    CHARGE_MOSFET_FAULT = "charge_mosfet_fault"
    DISCHARGE_MOSFET_FAULT = "discharge_mosfet_fault"
    WIRE_RESISTANCE = "wire_resistance"
    BATTERY_FULL = "battery_full"
    LOW_SOC = "low_soc"
    SYSTEM_FAULT = "system_fault"

    @property
    def is_protection(self) -> bool:
        """True when the BMS typically opens a MOSFET for this condition (used by inverter outputs)."""
        return self not in _INFORMATIONAL_ALARMS

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``Cell overvoltage``."""
        return self.value.replace("_", " ").capitalize()


_INFORMATIONAL_ALARMS: Final = frozenset({Alarm.BATTERY_FULL, Alarm.LOW_SOC, Alarm.CELL_IMBALANCE})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What the BMS says about itself. Every field is optional."""

    manufacturer: str | None = None
    model: str | None = None
    name: str | None = None
    hardware_version: str | None = None
    software_version: str | None = None
    serial_number: str | None = None
    production_date: dt.date | None = None

    def to_dict(self) -> dict[str, str | None]:
        """JSON form; the date as ``YYYY-MM-DD``."""
        return {
            "manufacturer": self.manufacturer,
            "model": self.model,
            "name": self.name,
            "hardware_version": self.hardware_version,
            "software_version": self.software_version,
            "serial_number": self.serial_number,
            "production_date": self.production_date.isoformat() if self.production_date else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceInfo:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        date_text = data.get("production_date")
        return cls(
            manufacturer=data.get("manufacturer"),
            model=data.get("model"),
            name=data.get("name"),
            hardware_version=data.get("hardware_version"),
            software_version=data.get("software_version"),
            serial_number=data.get("serial_number"),
            production_date=dt.date.fromisoformat(date_text) if date_text else None,
        )

    def merged_over(self, older: DeviceInfo | None) -> DeviceInfo:
        """Fields of `self`, falling back to `older` where `self` does not know them."""
        if older is None or older is self or older == self:
            return self
        return DeviceInfo(
            **{
                field.name: getattr(self, field.name)
                if getattr(self, field.name) is not None
                else getattr(older, field.name)
                for field in dataclasses.fields(DeviceInfo)
            }
        )


EMPTY_DEVICE: Final = DeviceInfo()


@dataclasses.dataclass(frozen=True, slots=True)
class CellStat:
    """A cell voltage together with its 1-based cell number."""

    voltage: float
    cell: int


class PackQuantities:
    """Derived values shared by one pack (`BatterySnapshot`) and a bank of packs (`bmsgate.inverter.bank.BankState`).

    The subclass provides the measured attributes; everything here is computed from them, in one place.
    """

    __slots__ = ()

    voltage: float | None
    current: float | None
    remaining_capacity: float | None
    full_capacity: float | None
    alarms: frozenset[Alarm]

    @property
    def power(self) -> float | None:
        """W, positive while charging (V·I; vendor power fields are often unsigned)."""
        if self.voltage is None or self.current is None:
            return None
        return self.voltage * self.current

    @property
    def is_charging(self) -> bool | None:
        """Current flows into the pack (above a 0.05 A dead band)."""
        return None if self.current is None else self.current > _IDLE_CURRENT

    @property
    def is_discharging(self) -> bool | None:
        """Current flows out of the pack (above a 0.05 A dead band)."""
        return None if self.current is None else self.current < -_IDLE_CURRENT

    @property
    def time_to_empty(self) -> float | None:
        """Seconds until empty at the present discharge current; None when not discharging."""
        current = self.current
        if self.remaining_capacity is None or current is None or current >= -_IDLE_CURRENT:
            return None
        return self.remaining_capacity / -current * 3600.0

    @property
    def time_to_full(self) -> float | None:
        """Seconds until full at the present charge current; None when not charging."""
        current = self.current
        if self.remaining_capacity is None or self.full_capacity is None or current is None:
            return None
        if current <= _IDLE_CURRENT:
            return None
        return max(self.full_capacity - self.remaining_capacity, 0.0) / current * 3600.0

    @property
    def stored_energy(self) -> float | None:
        """Energy left in the pack, Wh (remaining Ah times present pack voltage)."""
        if self.remaining_capacity is None or self.voltage is None:
            return None
        return self.remaining_capacity * self.voltage

    @property
    def protection_active(self) -> bool:
        """Any alarm that normally makes the BMS open a MOSFET."""
        return any(alarm.is_protection for alarm in self.alarms)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BatterySnapshot(PackQuantities):
    """One consistent reading of one battery.

    Attributes:
        battery_id: the configured id (stable; used in topics and unique ids).
        timestamp: Unix time (s) when the poll completed.
        protocol: name of the protocol definition that decoded it.
        voltage: pack voltage, V.
        current: pack current, A, positive while charging.
        soc: state of charge, %.
        soh: state of health, %.
        remaining_capacity: Ah left.
        full_capacity: Ah when full (as the BMS believes).
        design_capacity: nominal capacity, Ah.
        cycles: charge cycle count.
        cell_voltages: V, cell 1 first.
        temperatures: battery NTC readings, °C, sensor 1 first.
        mosfet_temperature: power-stage temperature, °C.
        alarms: active alarms and protections.
        charge_enabled / discharge_enabled: MOSFET states.
        balancing: balancer running (when only a global flag is known).
        balancing_cells: 1-based cell numbers being balanced; None when not reported per cell.
        balance_current: A, when reported.
        heating: heater running.
        device: identity of the BMS.
        extras: vendor-specific values with no common meaning (typed scalars only).
    """

    battery_id: str
    timestamp: float
    protocol: str = ""
    voltage: float | None = None
    current: float | None = None
    soc: float | None = None
    soh: float | None = None
    remaining_capacity: float | None = None
    full_capacity: float | None = None
    design_capacity: float | None = None
    cycles: int | None = None
    cell_voltages: tuple[float, ...] = ()
    temperatures: tuple[float, ...] = ()
    mosfet_temperature: float | None = None
    alarms: frozenset[Alarm] = frozenset()
    charge_enabled: bool | None = None
    discharge_enabled: bool | None = None
    balancing: bool | None = None
    balancing_cells: tuple[int, ...] | None = None
    balance_current: float | None = None
    heating: bool | None = None
    device: DeviceInfo = EMPTY_DEVICE
    extras: Mapping[str, ExtraValue] = dataclasses.field(default_factory=dict)

    # -- derived values: the only place they are computed -------------------------------------------

    @property
    def cell_count(self) -> int:
        """Number of cells reported."""
        return len(self.cell_voltages)

    @property
    def cell_min(self) -> CellStat | None:
        """Lowest cell voltage and its 1-based number (the first one on ties)."""
        if not self.cell_voltages:
            return None
        index = min(range(len(self.cell_voltages)), key=self.cell_voltages.__getitem__)
        return CellStat(self.cell_voltages[index], index + 1)

    @property
    def cell_max(self) -> CellStat | None:
        """Highest cell voltage and its 1-based number (the first one on ties)."""
        if not self.cell_voltages:
            return None
        index = max(range(len(self.cell_voltages)), key=self.cell_voltages.__getitem__)
        return CellStat(self.cell_voltages[index], index + 1)

    @property
    def cell_mean(self) -> float | None:
        """Mean cell voltage, V."""
        if not self.cell_voltages:
            return None
        return math.fsum(self.cell_voltages) / len(self.cell_voltages)

    @property
    def cell_delta(self) -> float | None:
        """Highest minus lowest cell voltage, V."""
        if not self.cell_voltages:
            return None
        return max(self.cell_voltages) - min(self.cell_voltages)

    @property
    def temperature_mean(self) -> float | None:
        """Mean of the battery NTCs (not the MOSFET sensor), °C."""
        if not self.temperatures:
            return None
        return math.fsum(self.temperatures) / len(self.temperatures)

    @property
    def temperature_max(self) -> float | None:
        """Hottest battery NTC, °C."""
        return max(self.temperatures) if self.temperatures else None

    @property
    def temperature_min(self) -> float | None:
        """Coldest battery NTC, °C."""
        return min(self.temperatures) if self.temperatures else None

    # -- JSON form --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form ("structured dictionary"); see docs/snapshot-json.md."""
        cell_min, cell_max = self.cell_min, self.cell_max
        return {
            "schema": SNAPSHOT_SCHEMA_VERSION,
            "battery_id": self.battery_id,
            "timestamp": self.timestamp,
            "protocol": self.protocol,
            "voltage": _round(self.voltage, 3),
            "current": _round(self.current, 3),
            "power": _round(self.power, 2),
            "soc": _round(self.soc, 1),
            "soh": _round(self.soh, 1),
            "remaining_capacity": _round(self.remaining_capacity, 3),
            "full_capacity": _round(self.full_capacity, 3),
            "design_capacity": _round(self.design_capacity, 3),
            "cycles": self.cycles,
            "cell_count": self.cell_count,
            "cell_voltages": [round(v, 4) for v in self.cell_voltages],
            "cell_min": _round(cell_min.voltage if cell_min else None, 4),
            "cell_min_number": cell_min.cell if cell_min else None,
            "cell_max": _round(cell_max.voltage if cell_max else None, 4),
            "cell_max_number": cell_max.cell if cell_max else None,
            "cell_mean": _round(self.cell_mean, 4),
            "cell_delta": _round(self.cell_delta, 4),
            "temperatures": [round(t, 2) for t in self.temperatures],
            "temperature_mean": _round(self.temperature_mean, 2),
            "mosfet_temperature": _round(self.mosfet_temperature, 2),
            "alarms": sorted(alarm.value for alarm in self.alarms),
            "charge_enabled": self.charge_enabled,
            "discharge_enabled": self.discharge_enabled,
            "balancing": self.balancing_active,
            "balancing_cells": list(self.balancing_cells) if self.balancing_cells is not None else [],
            "balance_current": _round(self.balance_current, 3),
            "heating": self.heating,
            "time_to_empty": _round(self.time_to_empty, 0),
            "time_to_full": _round(self.time_to_full, 0),
            "stored_energy": _round(self.stored_energy, 1),
            "device": self.device.to_dict(),
            "extras": dict(self.extras),
        }

    @property
    def balancing_active(self) -> bool | None:
        """Balancer running: the explicit flag, else whether any cell is being balanced."""
        if self.balancing is not None:
            return self.balancing
        if self.balancing_cells is not None:
            return bool(self.balancing_cells)
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatterySnapshot:
        """Rebuild a snapshot from its JSON form (derived keys are ignored; they are recomputed).

        Raises:
            ValueError: when a key has the wrong type or an unknown alarm name.
        """
        try:
            return cls(
                battery_id=str(data["battery_id"]),
                timestamp=float(data["timestamp"]),
                protocol=str(data.get("protocol", "")),
                voltage=_opt_float(data.get("voltage")),
                current=_opt_float(data.get("current")),
                soc=_opt_float(data.get("soc")),
                soh=_opt_float(data.get("soh")),
                remaining_capacity=_opt_float(data.get("remaining_capacity")),
                full_capacity=_opt_float(data.get("full_capacity")),
                design_capacity=_opt_float(data.get("design_capacity")),
                cycles=None if data.get("cycles") is None else int(data["cycles"]),
                cell_voltages=tuple(float(v) for v in data.get("cell_voltages", ())),
                temperatures=tuple(float(t) for t in data.get("temperatures", ())),
                mosfet_temperature=_opt_float(data.get("mosfet_temperature")),
                alarms=frozenset(Alarm(name) for name in data.get("alarms", ())),
                charge_enabled=data.get("charge_enabled"),
                discharge_enabled=data.get("discharge_enabled"),
                balancing=data.get("balancing"),
                balancing_cells=tuple(int(c) for c in data.get("balancing_cells", ())),
                balance_current=_opt_float(data.get("balance_current")),
                heating=data.get("heating"),
                device=DeviceInfo.from_dict(data.get("device") or {}),
                extras=dict(data.get("extras") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a bmsgate snapshot: {exc!r}") from exc

    def replace(self, **changes: Any) -> BatterySnapshot:
        """A copy with some fields changed (e.g. the battery id)."""
        return dataclasses.replace(self, **changes)


_IDLE_CURRENT: Final = 0.05


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)

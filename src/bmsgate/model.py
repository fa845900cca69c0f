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
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final

from bmsgate.slotfill import slot_filler

__all__ = [
    "BOOL_FIELDS",
    "DERIVED_JSON_KEYS",
    "DEVICE_FIELDS",
    "DEVICE_FIELD_KINDS",
    "FLOAT_FIELDS",
    "INT_FIELDS",
    "LIST_FIELDS",
    "PERCENT_FIELDS",
    "SET_FIELDS",
    "SNAPSHOT_FIELD_KINDS",
    "SNAPSHOT_SCHEMA_VERSION",
    "FieldKind",
    "PackQuantities",
    "Alarm",
    "BatterySnapshot",
    "CellStat",
    "DeviceInfo",
    "ExtraValue",
    "snapshot_fields",
    "trusted_snapshot",
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
        return {name: _TO_JSON[kind](getattr(self, name)) for name, kind in DEVICE_FIELD_KINDS.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceInfo:
        """Inverse of :meth:`to_dict`; unknown keys are ignored.

        Raises:
            ValueError: a value has the wrong type or the date is not ``YYYY-MM-DD``.
        """
        return cls(
            **{
                name: _from_json(kind, data[name], f"device.{name}")
                for name, kind in DEVICE_FIELD_KINDS.items()
                if name in data
            }
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
        cells = self.cell_voltages
        if not cells:
            return None
        # min() then index(): two C loops instead of a Python key call per cell (every output asks).
        lowest = min(cells)
        return CellStat(lowest, cells.index(lowest) + 1)

    @property
    def cell_max(self) -> CellStat | None:
        """Highest cell voltage and its 1-based number (the first one on ties)."""
        cells = self.cell_voltages
        if not cells:
            return None
        highest = max(cells)
        return CellStat(highest, cells.index(highest) + 1)

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

    @property
    def balancing_active(self) -> bool | None:
        """Balancer running: the explicit flag, else whether any cell is being balanced."""
        if self.balancing is not None:
            return self.balancing
        if self.balancing_cells is not None:
            return bool(self.balancing_cells)
        return None

    # -- JSON form --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form ("structured dictionary"); see docs/snapshot-json.md.

        Every field appears under its own name exactly as measured (no rounding: that is the job of
        whatever displays it), followed by the derived values; `from_dict` inverts it without loss.
        """
        data: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA_VERSION}
        for name, kind in SNAPSHOT_FIELD_KINDS.items():
            data[name] = _TO_JSON[kind](getattr(self, name))
        for name, (read, _kind) in _DERIVED_KEYS.items():
            data[name] = read(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatterySnapshot:
        """Rebuild a snapshot from its JSON form (derived keys are ignored; they are recomputed).

        Raises:
            ValueError: when a key is missing or has the wrong type, or an alarm name is unknown.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"not a bmsgate snapshot: {type(data).__name__}, not an object")
        schema = data.get("schema", SNAPSHOT_SCHEMA_VERSION)
        if schema != SNAPSHOT_SCHEMA_VERSION or isinstance(schema, bool):
            # A newer form may mean something else by the same keys: refuse it rather than guess.
            raise ValueError(f"schema: snapshot JSON version {schema!r}; this bmsgate reads {SNAPSHOT_SCHEMA_VERSION}")
        values: dict[str, Any] = {}
        for name in _REQUIRED_FIELDS:
            if name not in data:
                raise ValueError(f"not a bmsgate snapshot: {name!r} is missing")
        for name, kind in SNAPSHOT_FIELD_KINDS.items():
            value = data.get(name)
            if value is None and kind in _EMPTY_WHEN_NULL:
                continue  # lenient: an absent list or mapping may be written as null
            if name in data:
                values[name] = _from_json(kind, value, name)
        return cls(**values)

    def replace(self, **changes: Any) -> BatterySnapshot:
        """A copy with some fields changed (e.g. the battery id)."""
        return dataclasses.replace(self, **changes)


_IDLE_CURRENT: Final = 0.05


trusted_snapshot: Final[Callable[[Mapping[str, Any]], BatterySnapshot]] = slot_filler(
    BatterySnapshot,
    name="trusted_snapshot",
    doc="""A snapshot from values the decoder already typed: every field, without `__init__`'s cost.

    A decoder builds tens of thousands of snapshots a second; this fills the slots by plain stores
    (`bmsgate.slotfill`). The result is an ordinary, immutable `BatterySnapshot` (equal to, and
    indistinguishable from, the one `__init__` builds from the same values). Callers must pass
    ``battery_id``, ``timestamp``, ``device`` and ``extras``, and only snapshot field names; anything else
    belongs to `BatterySnapshot(...)`, which stays the public way to build one.
    """,
)


# -- the model described as data: what protocol definitions, the JSON form and its schema derive from --


class FieldKind(enum.Enum):
    """The kinds of value a snapshot (or device info) field holds; derived from its type annotation."""

    TEXT = "text"
    """``str``: identity (battery id, protocol name); never written by a definition."""
    NUMBER = "number"
    """``float``, always present (the timestamp)."""
    COUNT = "count"
    """``int``, always present (only derived keys so far: the cell count)."""
    FLOAT = "float"
    """``float | None``: a measurement."""
    INT = "int"
    """``int | None``: a counter."""
    BOOL = "bool"
    """``bool | None``: a state flag."""
    FLOAT_LIST = "float_list"
    """``tuple[float, ...]``: a per-cell or per-sensor list."""
    CELL_NUMBERS = "cell_numbers"
    """``tuple[int, ...] | None``: 1-based cell numbers (None: not reported per cell)."""
    ALARMS = "alarms"
    """``frozenset[Alarm]``."""
    DEVICE = "device"
    """`DeviceInfo`."""
    EXTRAS = "extras"
    """``Mapping[str, ExtraValue]``: vendor-specific scalars."""
    OPTIONAL_TEXT = "optional_text"
    """``str | None`` (device info)."""
    DATE = "date"
    """``datetime.date | None`` (device info), ``YYYY-MM-DD`` in JSON."""


_KIND_OF_TYPE: Final[Mapping[Any, FieldKind]] = {
    str: FieldKind.TEXT,
    float: FieldKind.NUMBER,
    int: FieldKind.COUNT,
    float | None: FieldKind.FLOAT,
    int | None: FieldKind.INT,
    bool | None: FieldKind.BOOL,
    tuple[float, ...]: FieldKind.FLOAT_LIST,
    tuple[int, ...] | None: FieldKind.CELL_NUMBERS,
    frozenset[Alarm]: FieldKind.ALARMS,
    DeviceInfo: FieldKind.DEVICE,
    Mapping[str, ExtraValue]: FieldKind.EXTRAS,
    str | None: FieldKind.OPTIONAL_TEXT,
    dt.date | None: FieldKind.DATE,
}


def _field_kinds(cls: type) -> dict[str, FieldKind]:
    hints = typing.get_type_hints(cls)
    kinds: dict[str, FieldKind] = {}
    for field in dataclasses.fields(cls):
        kind = _KIND_OF_TYPE.get(hints[field.name])
        if kind is None:
            # A new field type must be taught to the JSON form, the schema and the definition checks.
            raise TypeError(f"{cls.__name__}.{field.name}: no FieldKind for {hints[field.name]!r}")
        kinds[field.name] = kind
    return kinds


SNAPSHOT_FIELD_KINDS: Final[Mapping[str, FieldKind]] = types.MappingProxyType(_field_kinds(BatterySnapshot))
"""Every `BatterySnapshot` field and its kind, in declaration order (the order of the JSON form)."""
DEVICE_FIELD_KINDS: Final[Mapping[str, FieldKind]] = types.MappingProxyType(_field_kinds(DeviceInfo))
"""Every `DeviceInfo` field and its kind."""


def snapshot_fields(*kinds: FieldKind) -> frozenset[str]:
    """Names of the snapshot fields of the given kinds."""
    return frozenset(name for name, kind in SNAPSHOT_FIELD_KINDS.items() if kind in kinds)


FLOAT_FIELDS: Final = snapshot_fields(FieldKind.FLOAT)
INT_FIELDS: Final = snapshot_fields(FieldKind.INT)
BOOL_FIELDS: Final = snapshot_fields(FieldKind.BOOL)
LIST_FIELDS: Final = snapshot_fields(FieldKind.FLOAT_LIST)
"""Float lists (cell voltages, temperatures)."""
SET_FIELDS: Final = snapshot_fields(FieldKind.ALARMS, FieldKind.CELL_NUMBERS)
"""Fields that several definition fields add members to (alarms, balancing cells)."""
DEVICE_FIELDS: Final = frozenset(DEVICE_FIELD_KINDS)
PERCENT_FIELDS: Final = frozenset({"soc", "soh"})
"""Percentages: outside 0..100 they are impossible content."""
_REQUIRED_FIELDS: Final = tuple(
    field.name
    for field in dataclasses.fields(BatterySnapshot)
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
)


def _cell_min_voltage(snapshot: BatterySnapshot) -> float | None:
    stat = snapshot.cell_min
    return stat.voltage if stat else None


def _cell_min_number(snapshot: BatterySnapshot) -> int | None:
    stat = snapshot.cell_min
    return stat.cell if stat else None


def _cell_max_voltage(snapshot: BatterySnapshot) -> float | None:
    stat = snapshot.cell_max
    return stat.voltage if stat else None


def _cell_max_number(snapshot: BatterySnapshot) -> int | None:
    stat = snapshot.cell_max
    return stat.cell if stat else None


_Derived = tuple[Callable[[BatterySnapshot], Any], FieldKind]
_DERIVED_KEYS: Final[Mapping[str, _Derived]] = {
    "power": (operator.attrgetter("power"), FieldKind.FLOAT),
    "cell_count": (operator.attrgetter("cell_count"), FieldKind.COUNT),
    "cell_min": (_cell_min_voltage, FieldKind.FLOAT),
    "cell_min_number": (_cell_min_number, FieldKind.INT),
    "cell_max": (_cell_max_voltage, FieldKind.FLOAT),
    "cell_max_number": (_cell_max_number, FieldKind.INT),
    "cell_mean": (operator.attrgetter("cell_mean"), FieldKind.FLOAT),
    "cell_delta": (operator.attrgetter("cell_delta"), FieldKind.FLOAT),
    "temperature_mean": (operator.attrgetter("temperature_mean"), FieldKind.FLOAT),
    "balancing_active": (operator.attrgetter("balancing_active"), FieldKind.BOOL),
    "time_to_empty": (operator.attrgetter("time_to_empty"), FieldKind.FLOAT),
    "time_to_full": (operator.attrgetter("time_to_full"), FieldKind.FLOAT),
    "stored_energy": (operator.attrgetter("stored_energy"), FieldKind.FLOAT),
}
"""Keys of the JSON form computed from the fields (ignored by `from_dict`), and their JSON kinds."""
DERIVED_JSON_KEYS: Final[Mapping[str, FieldKind]] = types.MappingProxyType(
    {name: kind for name, (_read, kind) in _DERIVED_KEYS.items()}
)


def _same(value: Any) -> Any:
    return value


def _device_to_json(info: DeviceInfo) -> dict[str, str | None]:
    return info.to_dict()


_TO_JSON: Final[Mapping[FieldKind, Callable[[Any], Any]]] = {
    FieldKind.TEXT: _same,
    FieldKind.NUMBER: _same,
    FieldKind.COUNT: _same,
    FieldKind.FLOAT: _same,
    FieldKind.INT: _same,
    FieldKind.BOOL: _same,
    FieldKind.OPTIONAL_TEXT: _same,
    FieldKind.FLOAT_LIST: list,
    FieldKind.CELL_NUMBERS: lambda cells: None if cells is None else list(cells),
    FieldKind.ALARMS: lambda alarms: sorted(alarm.value for alarm in alarms),
    FieldKind.DEVICE: _device_to_json,
    FieldKind.EXTRAS: dict,
    FieldKind.DATE: lambda date: None if date is None else date.isoformat(),
}


def _from_json(kind: FieldKind, value: Any, name: str) -> Any:
    """One field's value from its JSON form, type-checked (bool is not a number, a number not a bool)."""
    if value is None and kind not in _NEVER_NULL:
        return None
    if kind in {FieldKind.TEXT, FieldKind.OPTIONAL_TEXT} and isinstance(value, str):
        return value
    if kind in {FieldKind.NUMBER, FieldKind.FLOAT} and _is_number(value):
        return float(value)
    if kind in {FieldKind.INT, FieldKind.COUNT} and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is FieldKind.BOOL and isinstance(value, bool):
        return value
    if kind is FieldKind.FLOAT_LIST and isinstance(value, list | tuple) and all(map(_is_number, value)):
        return tuple(float(item) for item in value)
    if (
        kind is FieldKind.CELL_NUMBERS
        and isinstance(value, list | tuple)
        and all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    ):
        return tuple(value)
    if kind is FieldKind.ALARMS and isinstance(value, list | tuple):
        return frozenset(Alarm(item) for item in value)
    if kind is FieldKind.DEVICE and isinstance(value, Mapping):
        return DeviceInfo.from_dict(value)
    if (
        kind is FieldKind.EXTRAS
        and isinstance(value, Mapping)
        and all(isinstance(key, str) and isinstance(item, float | int | str) for key, item in value.items())
    ):
        return dict(value)
    if kind is FieldKind.DATE and isinstance(value, str):
        return dt.date.fromisoformat(value)
    raise ValueError(f"not a bmsgate snapshot: {name!r} is not {kind.value}: {value!r}")


# Absent lists and mappings have an empty value, never null (but null is read as that empty value).
_EMPTY_WHEN_NULL: Final = frozenset({FieldKind.FLOAT_LIST, FieldKind.ALARMS, FieldKind.DEVICE, FieldKind.EXTRAS})
_NEVER_NULL: Final = _EMPTY_WHEN_NULL | {FieldKind.TEXT, FieldKind.NUMBER, FieldKind.COUNT}


def _is_number(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)

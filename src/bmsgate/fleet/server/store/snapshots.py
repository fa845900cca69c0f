"""A telemetry reading's snapshot, read fast: what the store keeps of it, without the general round trip.

Ingest stores thousands of readings a second. :meth:`BatterySnapshot.from_dict` checks every field with the
general per-kind reader, and :meth:`BatterySnapshot.to_dict` recomputes the cell minimum and maximum twice
each; together they were ~90 us of the ~340 us a message cost. :func:`read_snapshot` checks the common form
(exact JSON types, as a JSON parser produces them) with a few type tests per field and fills the snapshot
through :func:`~bmsgate.model.trusted_snapshot`; anything less common (an alarm list, a device with a
production date, a number of a subclass type, ...) goes to ``from_dict`` itself, so a snapshot is accepted
or refused exactly as ``from_dict`` would, with the same result. :func:`full_form` is ``to_dict`` with each
derived value computed once, by the snapshot's own properties (the one place they are defined).

The tests hold both to the general path: for any mapping, the same snapshot or the same refusal; for any
snapshot, the same JSON form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from bmsgate.model import (
    DERIVED_JSON_KEYS,
    DEVICE_FIELD_KINDS,
    EMPTY_DEVICE,
    SNAPSHOT_FIELD_KINDS,
    SNAPSHOT_SCHEMA_VERSION,
    Alarm,
    BatterySnapshot,
    DeviceInfo,
    FieldKind,
    trusted_snapshot,
)

__all__ = [
    "all_finite",
    "full_form",
    "full_form_finite",
    "json_finite",
    "read_finite_snapshot",
    "read_snapshot",
    "with_finite_derived",
]

_REQUIRED: Final = ("battery_id", "timestamp")
_DEVICE_TEXT: Final = frozenset(name for name, kind in DEVICE_FIELD_KINDS.items() if kind is FieldKind.OPTIONAL_TEXT)
_EXTRA_TYPES: Final = (float, int, str, bool)
_PLAIN_TYPES: Final = (str, int, bool)


class _Uncommon(Exception):
    """Not the common form: ``from_dict`` decides."""


def _number(value: Any) -> float:
    if type(value) is float:
        if not math.isfinite(value):
            raise _Uncommon  # the general path refuses it
        return value
    if type(value) is int:
        return float(value)  # OverflowError for a 400-digit integer: from_dict decides (and refuses)
    raise _Uncommon


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


def _optional_int(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    raise _Uncommon


def _optional_bool(value: Any) -> bool | None:
    if value is None or type(value) is bool:
        return value
    raise _Uncommon


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    raise _Uncommon


def _float_list(value: Any) -> tuple[float, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _Uncommon
    for item in value:
        if type(item) is float:
            if not math.isfinite(item):
                raise _Uncommon
        elif type(item) is not int:
            raise _Uncommon
    return tuple(map(float, value))


def _cell_numbers(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if type(value) is not list:
        raise _Uncommon
    for item in value:
        if type(item) is not int:
            raise _Uncommon
    return tuple(value)


def _alarms(value: Any) -> frozenset[Alarm]:
    if value is None or value == []:
        return frozenset()
    if type(value) is not list:
        raise _Uncommon
    for item in value:
        if type(item) is not str:
            raise _Uncommon
    try:
        return frozenset(map(Alarm, value))
    except ValueError:
        raise _Uncommon from None


def _device(value: Any) -> DeviceInfo:
    if value is None:
        return EMPTY_DEVICE
    if type(value) is not dict:
        raise _Uncommon
    texts: dict[str, Any] = {}
    for name, item in value.items():
        if item is None:
            continue
        if name in _DEVICE_TEXT and type(item) is str:
            texts[name] = item
        elif name in DEVICE_FIELD_KINDS:
            raise _Uncommon  # a production date, or a wrong type
    return DeviceInfo(**texts) if texts else EMPTY_DEVICE


def _extras(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _Uncommon
    for key, item in value.items():
        if type(key) is not str or type(item) not in _EXTRA_TYPES or (type(item) is float and not math.isfinite(item)):
            raise _Uncommon
    return dict(value)


_READERS: Final[Mapping[FieldKind, Callable[[Any], Any]]] = {
    FieldKind.TEXT: _text,
    FieldKind.NUMBER: _number,
    FieldKind.FLOAT: _optional_number,
    FieldKind.INT: _optional_int,
    FieldKind.BOOL: _optional_bool,
    FieldKind.FLOAT_LIST: _float_list,
    FieldKind.CELL_NUMBERS: _cell_numbers,
    FieldKind.ALARMS: _alarms,
    FieldKind.DEVICE: _device,
    FieldKind.EXTRAS: _extras,
}
_FIELD_READERS: Final[Mapping[str, Callable[[Any], Any]] | None] = (
    {name: _READERS[kind] for name, kind in SNAPSHOT_FIELD_KINDS.items()}
    if all(kind in _READERS for kind in SNAPSHOT_FIELD_KINDS.values())
    else None
)
"""None if the snapshot gained a kind of field this module does not know: then everything goes to ``from_dict``."""


def _read_common(data: Any) -> BatterySnapshot | None:
    """The snapshot of a common-form mapping with every number finite; None for anything else."""
    readers = _FIELD_READERS
    schema = data.get("schema", SNAPSHOT_SCHEMA_VERSION) if type(data) is dict else None
    if readers is None or type(schema) is not int or schema != SNAPSHOT_SCHEMA_VERSION:
        return None
    try:
        for name in _REQUIRED:
            if name not in data:
                return None
        values = {"device": EMPTY_DEVICE, "extras": {}}
        for name, value in data.items():
            reader = readers.get(name)
            if reader is not None:
                values[name] = reader(value)
            elif type(value) is float:
                if not math.isfinite(value):
                    return None
            elif value is not None and type(value) not in _PLAIN_TYPES:
                return None  # a list or mapping under a key the snapshot ignores: the general path checks it
        return trusted_snapshot(values)
    except (_Uncommon, ArithmeticError):
        return None


def read_snapshot(data: Any) -> BatterySnapshot:
    """``BatterySnapshot.from_dict(data)``, fast for the common form; the same snapshot or the same refusal.

    Raises:
        ValueError: (and whatever else ``from_dict`` raises) the data is not a valid snapshot JSON form.
    """
    return _read_common(data) or BatterySnapshot.from_dict(data)


def read_finite_snapshot(data: Any) -> BatterySnapshot:
    """:func:`read_snapshot` of a parsed JSON value that must hold no NaN or infinity anywhere.

    Raises:
        ValueError: a NaN or infinity (what ``json.dumps(allow_nan=False)`` refuses), or whatever
            ``from_dict`` refuses.
    """
    snapshot = _read_common(data)
    if snapshot is not None:
        return snapshot
    if not json_finite(data):
        raise ValueError("NaN or infinity in a snapshot")
    return BatterySnapshot.from_dict(data)


def json_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a parsed JSON value (what ``json.dumps(allow_nan=False)`` refuses)."""
    if type(value) is float:
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(json_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(json_finite(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _same(value: Any) -> Any:
    return value


_EMPTY_DEVICE_JSON: Final = EMPTY_DEVICE.to_dict()


def _device_json(device: DeviceInfo) -> dict[str, Any]:
    return dict(_EMPTY_DEVICE_JSON) if device == EMPTY_DEVICE else device.to_dict()


_TO_JSON: Final[Mapping[FieldKind, Callable[[Any], Any]]] = {
    FieldKind.FLOAT_LIST: list,
    FieldKind.CELL_NUMBERS: lambda cells: None if cells is None else list(cells),
    FieldKind.ALARMS: lambda alarms: sorted(alarm.value for alarm in alarms),
    FieldKind.DEVICE: _device_json,
    FieldKind.EXTRAS: dict,
}
_FIELD_WRITERS: Final = tuple((name, _TO_JSON.get(kind, _same)) for name, kind in SNAPSHOT_FIELD_KINDS.items())
_DERIVED_ORDER: Final = (
    "power",
    "cell_count",
    "cell_min",
    "cell_min_number",
    "cell_max",
    "cell_max_number",
    "cell_mean",
    "cell_delta",
    "temperature_mean",
    "balancing_active",
    "time_to_empty",
    "time_to_full",
    "stored_energy",
)
_DERIVED_MATCH: Final = tuple(DERIVED_JSON_KEYS) == _DERIVED_ORDER and all(
    kind in _READERS or kind in _TO_JSON for kind in SNAPSHOT_FIELD_KINDS.values()
)
"""False if the model's JSON form changed: then :func:`full_form` is ``to_dict`` itself."""


_DERIVED_FLOATS: Final = (
    "power",
    "cell_mean",
    "cell_delta",
    "temperature_mean",
    "time_to_empty",
    "time_to_full",
    "stored_energy",
)


def with_finite_derived(full: dict[str, Any]) -> bool:
    """Whether the derived values of a full form (of a snapshot whose fields are finite) are finite."""
    for name in _DERIVED_FLOATS:
        value = full.get(name)
        if type(value) is float and not math.isfinite(value):
            return False
    return True


def full_form_finite(snapshot: BatterySnapshot) -> dict[str, Any] | None:
    """:func:`full_form` of a snapshot whose fields are finite; None if a derived value overflows."""
    data = full_form(snapshot)
    return data if with_finite_derived(data) else None


def full_form(snapshot: BatterySnapshot) -> dict[str, Any]:
    """``snapshot.to_dict()``, with the cell minimum and maximum computed once each."""
    if not _DERIVED_MATCH:
        return snapshot.to_dict()
    data: dict[str, Any] = {"schema": SNAPSHOT_SCHEMA_VERSION}
    for name, write in _FIELD_WRITERS:
        data[name] = write(getattr(snapshot, name))
    cells = snapshot.cell_voltages
    low, high = snapshot.cell_min, snapshot.cell_max
    data["power"] = snapshot.power
    data["cell_count"] = len(cells)
    data["cell_min"] = None if low is None else low.voltage
    data["cell_min_number"] = None if low is None else low.cell
    data["cell_max"] = None if high is None else high.voltage
    data["cell_max_number"] = None if high is None else high.cell
    data["cell_mean"] = snapshot.cell_mean
    data["cell_delta"] = None if low is None or high is None else high.voltage - low.voltage
    data["temperature_mean"] = snapshot.temperature_mean
    data["balancing_active"] = snapshot.balancing_active
    data["time_to_empty"] = snapshot.time_to_empty
    data["time_to_full"] = snapshot.time_to_full
    data["stored_energy"] = snapshot.stored_energy
    return data


def all_finite(values: tuple[float | None, ...]) -> bool:
    """No NaN or infinity among the numbers (None is fine)."""
    return all(value is None or math.isfinite(value) for value in values)

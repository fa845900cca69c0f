"""The state message compiled per battery: :class:`StatePlan`.

A battery's state is built on every snapshot from the same rows; compiling the rows once into a plan
takes the per-row calls out of that path. :func:`~bmsgate.homeassistant.entities.build_state` stays the
reference the plan is tested against.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Final

from bmsgate.homeassistant.entities import (
    Attributes,
    EntityDescription,
    ListItem,
    SnapshotField,
    StateInputs,
    StateValue,
    encode_value,
)
from bmsgate.model import BatterySnapshot

__all__ = ["StatePlan"]


class StatePlan:
    """:func:`~bmsgate.homeassistant.entities.build_state` compiled for one fixed set of rows.

    The sink builds a battery's state on every snapshot from the same rows. Going row by row costs
    three Python calls per value (the row's ``encode``, its reader, the snapshot lambda); the plan
    instead sorts the rows once by how their value is read: the plain snapshot fields come from one
    ``attrgetter`` call, each snapshot list (cell voltages, temperatures) is read once, and only the
    other rows (energy, link, last command, cell extremes) call their reader. The result equals
    :func:`build_state`'s for the same rows (a test compares them over many snapshots).
    """

    __slots__ = ("_attributes", "_field_keys", "_fields", "_lists", "_others", "rows")

    def __init__(self, rows: Iterable[EntityDescription]) -> None:
        self.rows: Final = tuple(rows)
        paths: list[str] = []
        field_keys: list[tuple[str, int | None]] = []
        lists: dict[str, list[tuple[int, str, int | None]]] = {}
        others: list[tuple[str, Callable[[StateInputs], StateValue | bool], int | None]] = []
        attributes: list[tuple[str, Callable[[StateInputs], Attributes]]] = []
        for row in self.rows:
            if row.template is None:
                reader = row.value
                if isinstance(reader, SnapshotField):
                    paths.append(reader.path)
                    field_keys.append((row.key, row.digits))
                elif isinstance(reader, ListItem):
                    lists.setdefault(reader.attribute, []).append((reader.index, row.key, row.digits))
                else:
                    others.append((row.key, reader, row.digits))
            if row.attributes is not None:
                attributes.append((row.key, row.attributes))
        self._fields: Final = _tuple_getter(paths)
        self._field_keys: Final = tuple(field_keys)
        self._lists: Final = tuple((attribute, tuple(items)) for attribute, items in lists.items())
        self._others: Final = tuple(others)
        self._attributes: Final = tuple(attributes)

    def build(self, inputs: StateInputs) -> dict[str, object]:
        """The JSON state message of one battery (as :func:`build_state` of the plan's rows)."""
        snapshot = inputs.snapshot
        state: dict[str, object] = {"alarms": sorted(alarm.value for alarm in snapshot.alarms)}
        # A float, most values, is rounded here without a call; anything else takes encode_value's full rules.
        for (key, digits), raw in zip(self._field_keys, self._fields(snapshot), strict=True):
            if isinstance(raw, float) and digits is not None:
                state[key] = round(raw, digits)
            else:
                state[key] = encode_value(raw, digits)
        for attribute, items in self._lists:
            values: tuple[StateValue, ...] = getattr(snapshot, attribute)
            count = len(values)
            for index, key, digits in items:
                if index >= count:
                    state[key] = None
                    continue
                value = values[index]
                if isinstance(value, float) and digits is not None:
                    state[key] = round(value, digits)
                else:
                    state[key] = encode_value(value, digits)
        for key, read, digits in self._others:
            state[key] = encode_value(read(inputs), digits)
        state["attrs"] = {key: dict(read_attributes(inputs)) for key, read_attributes in self._attributes}
        return state


def _tuple_getter(paths: list[str]) -> Callable[[BatterySnapshot], tuple[StateValue | bool, ...]]:
    """Reads `paths` of a snapshot as a tuple (``attrgetter`` returns a bare value for a single name)."""
    if not paths:
        return lambda snapshot: ()
    if len(paths) == 1:
        read_one = operator.attrgetter(paths[0])
        return lambda snapshot: (read_one(snapshot),)
    return operator.attrgetter(*paths)

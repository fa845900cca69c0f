"""Entity descriptions: one row per Home Assistant entity, as data.

A row says what the entity is (component, device class, unit, precision, category) and how its value
and attributes are read from :class:`StateInputs`. The discovery builders turn rows into config
payloads, and the same rows produce the JSON state message, so an entity and its value can never
disagree. Rows whose value is ``None`` for a battery are not announced (the BMS does not report it).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Final, Literal

from bmsgate.homeassistant.energy import EnergyTotals
from bmsgate.homeassistant.settings import LinkStats
from bmsgate.model import Alarm, BatterySnapshot

__all__ = [
    "INVERTER_ENTITIES",
    "CommandResult",
    "EntityDescription",
    "ListItem",
    "Outcome",
    "SnapshotField",
    "StateInputs",
    "battery_entities",
    "build_state",
    "encode_value",
    "encode_inverter_state",
    "present_entities",
]

Component = Literal["sensor", "binary_sensor", "switch"]
Category = Literal["diagnostic", "config"]
StateValue = float | int | str | None
Attributes = Mapping[str, object]
Outcome = Literal["confirmed", "refused", "unconfirmed"]

ON: Final = "ON"
OFF: Final = "OFF"


@dataclasses.dataclass(frozen=True, slots=True)
class CommandResult:
    """Outcome of the last control command, shown on the diagnostic "Last command" entity."""

    command: str
    """E.g. ``charge=off``."""
    outcome: Outcome
    error: str | None
    timestamp: float


@dataclasses.dataclass(frozen=True, slots=True)
class StateInputs:
    """Everything an entity value can be read from."""

    snapshot: BatterySnapshot
    energy: EnergyTotals | None = None
    link: LinkStats | None = None
    last_command: CommandResult | None = None
    control: bool = False
    """Control is enabled: the "Last command" entity exists even before the first command."""


@dataclasses.dataclass(frozen=True, slots=True)
class EntityDescription:
    """One Home Assistant entity of a battery.

    Attributes:
        key: stable key: part of unique id, suggested entity id and the state JSON.
        name: entity name without the device name ("Cell 01").
        component: HA platform.
        value: reads the raw value; None means "not reported".
        device_class / state_class / unit / precision / category / icon: HA metadata.
        digits: rounding of the value in the state JSON (None: as is).
        attributes: reads extra attributes (published under ``attrs.<key>`` of the state JSON).
        always: announce even while `value` is None (e.g. a sensor whose value comes later).
        enabled_by_default: HA enables the entity on discovery.
        template: a value template reading another part of the state JSON; such a row adds no key
            of its own (alarm rows read the shared ``alarms`` list, which keeps the message small).
    """

    key: str
    name: str
    component: Component
    value: Callable[[StateInputs], StateValue | bool]
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    precision: int | None = None
    category: Category | None = None
    icon: str | None = None
    digits: int | None = None
    attributes: Callable[[StateInputs], Attributes] | None = None
    always: Callable[[StateInputs], bool] | None = None
    enabled_by_default: bool = True
    template: str | None = None

    def encode(self, inputs: StateInputs) -> StateValue:
        """The value as it appears in the state JSON (booleans as ``ON``/``OFF``)."""
        return encode_value(self.value(inputs), self.digits)

    def is_present(self, inputs: StateInputs) -> bool:
        """Whether this battery reports the entity (so it should be announced)."""
        if self.always is not None and self.always(inputs):
            return True
        return self.value(inputs) is not None


def encode_value(raw: StateValue | bool, digits: int | None) -> StateValue:
    """A value read by a row as it appears in the state JSON: booleans as ``ON``/``OFF``, floats rounded."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return ON if raw else OFF
    if isinstance(raw, float) and digits is not None:
        return round(raw, digits)
    return raw


# -- value readers ----------------------------------------------------------------------------------


class SnapshotField:
    """Reads one (dotted) attribute of the snapshot.

    A class rather than a closure so that :class:`~bmsgate.homeassistant.state.StatePlan` can see which
    attribute it reads and fetch all of a battery's plain fields with one ``attrgetter`` call.
    """

    __slots__ = ("_read", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._read = operator.attrgetter(path)

    def __call__(self, inputs: StateInputs) -> StateValue | bool:
        """The attribute's value in this snapshot."""
        value: StateValue | bool = self._read(inputs.snapshot)
        return value


class ListItem:
    """The `index`-th value of a snapshot list (cell voltages, temperatures), None when absent.

    A class for the same reason as :class:`SnapshotField`: the plan reads each list once per state.
    """

    __slots__ = ("attribute", "index")

    def __init__(self, attribute: str, index: int) -> None:
        self.attribute = attribute
        self.index = index

    def __call__(self, inputs: StateInputs) -> StateValue:
        """The list's `index`-th value in this snapshot, None when the list is shorter."""
        values: tuple[float, ...] = getattr(inputs.snapshot, self.attribute)
        return values[self.index] if self.index < len(values) else None


def _alarm(alarm: Alarm) -> Callable[[StateInputs], bool]:
    return lambda inputs: alarm in inputs.snapshot.alarms


def _cell_extreme(
    which: Literal["cell_min", "cell_max"], part: Literal["voltage", "cell"]
) -> Callable[[StateInputs], StateValue]:
    """The voltage or the number of the lowest/highest cell, None when the pack reports no cells."""

    def read(inputs: StateInputs) -> StateValue:
        stat = getattr(inputs.snapshot, which)
        return getattr(stat, part) if stat else None

    return read


def _energy_charged(inputs: StateInputs) -> float | None:
    return inputs.energy.charged_kwh if inputs.energy else None


def _energy_discharged(inputs: StateInputs) -> float | None:
    return inputs.energy.discharged_kwh if inputs.energy else None


def _link_quality(inputs: StateInputs) -> float | None:
    rate = inputs.link.success_rate if inputs.link else None
    return None if rate is None else rate * 100.0


def _rssi(inputs: StateInputs) -> int | None:
    return inputs.link.rssi if inputs.link else None


def _link_attributes(inputs: StateInputs) -> Attributes:
    return {"last_error": inputs.link.last_error if inputs.link else None}


def _balancing_attributes(inputs: StateInputs) -> Attributes:
    cells = inputs.snapshot.balancing_cells
    return {
        "cells": list(cells) if cells is not None else None,
        "balance_current": inputs.snapshot.balance_current,
    }


def _problem(inputs: StateInputs) -> bool:
    return bool(inputs.snapshot.alarms)


def _problem_attributes(inputs: StateInputs) -> Attributes:
    return {
        "alarms": sorted(alarm.value for alarm in inputs.snapshot.alarms),
        "protection_active": inputs.snapshot.protection_active,
    }


def _last_command(inputs: StateInputs) -> str | None:
    return inputs.last_command.outcome if inputs.last_command else None


def _last_command_attributes(inputs: StateInputs) -> Attributes:
    result = inputs.last_command
    if result is None:
        return {"command": None, "error": None, "timestamp": None}
    return {"command": result.command, "error": result.error, "timestamp": result.timestamp}


def _control_enabled(inputs: StateInputs) -> bool:
    return inputs.control


# -- the rows ----------------------------------------------------------------------------------------

_V: Final = "V"
_A: Final = "A"
_CELSIUS: Final = "°C"
_MEASUREMENT: Final = "measurement"

_HEAD_ROWS: Final[tuple[EntityDescription, ...]] = (
    EntityDescription(
        "voltage",
        "Voltage",
        "sensor",
        SnapshotField("voltage"),
        device_class="voltage",
        state_class=_MEASUREMENT,
        unit=_V,
        precision=2,
        digits=3,
    ),
    EntityDescription(
        "current",
        "Current",
        "sensor",
        SnapshotField("current"),
        device_class="current",
        state_class=_MEASUREMENT,
        unit=_A,
        precision=2,
        digits=3,
    ),
    EntityDescription(
        "power",
        "Power",
        "sensor",
        SnapshotField("power"),
        device_class="power",
        state_class=_MEASUREMENT,
        unit="W",
        precision=0,
        digits=1,
    ),
    EntityDescription(
        "soc",
        "State of charge",
        "sensor",
        SnapshotField("soc"),
        device_class="battery",
        state_class=_MEASUREMENT,
        unit="%",
        precision=0,
        digits=1,
    ),
    EntityDescription(
        "soh",
        "State of health",
        "sensor",
        SnapshotField("soh"),
        state_class=_MEASUREMENT,
        unit="%",
        precision=0,
        digits=1,
        category="diagnostic",
        icon="mdi:heart-pulse",
    ),
    EntityDescription(
        "remaining_capacity",
        "Remaining capacity",
        "sensor",
        SnapshotField("remaining_capacity"),
        state_class=_MEASUREMENT,
        unit="Ah",
        precision=1,
        digits=3,
        icon="mdi:battery-50",
    ),
    EntityDescription(
        "full_capacity",
        "Full capacity",
        "sensor",
        SnapshotField("full_capacity"),
        state_class=_MEASUREMENT,
        unit="Ah",
        precision=1,
        digits=3,
        icon="mdi:battery",
        category="diagnostic",
    ),
    EntityDescription(
        "cycles",
        "Cycles",
        "sensor",
        SnapshotField("cycles"),
        state_class="total_increasing",
        precision=0,
        icon="mdi:battery-sync",
        category="diagnostic",
    ),
    EntityDescription(
        "mosfet_temperature",
        "MOSFET temperature",
        "sensor",
        SnapshotField("mosfet_temperature"),
        device_class="temperature",
        state_class=_MEASUREMENT,
        unit=_CELSIUS,
        precision=1,
        digits=2,
        category="diagnostic",
    ),
    EntityDescription(
        "cell_min",
        "Cell voltage min",
        "sensor",
        _cell_extreme("cell_min", "voltage"),
        device_class="voltage",
        state_class=_MEASUREMENT,
        unit=_V,
        precision=3,
        digits=4,
    ),
    EntityDescription(
        "cell_min_number",
        "Cell number min",
        "sensor",
        _cell_extreme("cell_min", "cell"),
        icon="mdi:numeric",
        category="diagnostic",
    ),
    EntityDescription(
        "cell_max",
        "Cell voltage max",
        "sensor",
        _cell_extreme("cell_max", "voltage"),
        device_class="voltage",
        state_class=_MEASUREMENT,
        unit=_V,
        precision=3,
        digits=4,
    ),
    EntityDescription(
        "cell_max_number",
        "Cell number max",
        "sensor",
        _cell_extreme("cell_max", "cell"),
        icon="mdi:numeric",
        category="diagnostic",
    ),
    EntityDescription(
        "cell_mean",
        "Cell voltage average",
        "sensor",
        SnapshotField("cell_mean"),
        device_class="voltage",
        state_class=_MEASUREMENT,
        unit=_V,
        precision=3,
        digits=4,
    ),
    EntityDescription(
        "cell_delta",
        "Cell voltage delta",
        "sensor",
        SnapshotField("cell_delta"),
        device_class="voltage",
        state_class=_MEASUREMENT,
        unit=_V,
        precision=3,
        digits=4,
    ),
    EntityDescription(
        "energy_charged",
        "Energy charged",
        "sensor",
        _energy_charged,
        device_class="energy",
        state_class="total_increasing",
        unit="kWh",
        precision=2,
        digits=4,
    ),
    EntityDescription(
        "energy_discharged",
        "Energy discharged",
        "sensor",
        _energy_discharged,
        device_class="energy",
        state_class="total_increasing",
        unit="kWh",
        precision=2,
        digits=4,
    ),
    EntityDescription(
        "balancing",
        "Balancing",
        "binary_sensor",
        SnapshotField("balancing_active"),
        device_class="running",
        icon="mdi:scale-balance",
        attributes=_balancing_attributes,
    ),
    EntityDescription(
        "heating",
        "Heating",
        "binary_sensor",
        SnapshotField("heating"),
        device_class="heat",
        category="diagnostic",
    ),
    EntityDescription(
        "problem",
        "Problem",
        "binary_sensor",
        _problem,
        device_class="problem",
        attributes=_problem_attributes,
    ),
)

_TAIL_ROWS: Final[tuple[EntityDescription, ...]] = (
    EntityDescription(
        "link_quality", "Link quality", "sensor", _link_quality,
        state_class=_MEASUREMENT, unit="%", precision=0, digits=1, icon="mdi:link-variant",
        category="diagnostic", attributes=_link_attributes,
    ),
    EntityDescription(
        "rssi", "RSSI", "sensor", _rssi,
        device_class="signal_strength", state_class=_MEASUREMENT, unit="dBm", precision=0,
        category="diagnostic",
    ),
    EntityDescription(
        "firmware", "Firmware", "sensor", SnapshotField("device.software_version"),
        icon="mdi:chip", category="diagnostic",
    ),
    EntityDescription(
        "model", "Model", "sensor", SnapshotField("device.model"),
        icon="mdi:information-outline", category="diagnostic",
    ),
    EntityDescription(
        "last_command", "Last command", "sensor", _last_command,
        icon="mdi:console", category="diagnostic", attributes=_last_command_attributes,
        always=_control_enabled,
    ),
)  # fmt: skip


def _fet_row(key: str, name: str, control: bool) -> EntityDescription:
    read = SnapshotField(key)
    if control:
        return EntityDescription(key, name, "switch", read, device_class="switch", icon="mdi:electric-switch")
    return EntityDescription(key, name, "binary_sensor", read, device_class="power", category="diagnostic")


def battery_entities(
    *,
    cells: int,
    temperatures: int,
    alarms: Iterable[Alarm] = tuple(Alarm),
    control: bool = False,
) -> list[EntityDescription]:
    """Every candidate entity of a battery with this many cells and NTCs.

    Args:
        cells: number of cell voltages the battery reports.
        temperatures: number of battery NTCs.
        alarms: the alarms its protocol can raise (one problem sensor each).
        control: the MOSFETs become switches instead of binary sensors.
    """
    return list(_candidates(cells, temperatures, frozenset(alarms), control))


_ALARM_INDEX: Final = {alarm: index for index, alarm in enumerate(Alarm)}


@functools.lru_cache(maxsize=64)
def _candidates(
    cells: int, temperatures: int, alarms: frozenset[Alarm], control: bool
) -> tuple[EntityDescription, ...]:
    # The rows are immutable and depend only on the battery's shape: built once per shape, not per snapshot.
    rows = list(_HEAD_ROWS)
    rows += [
        EntityDescription(
            f"cell_{n + 1:02d}", f"Cell {n + 1:02d}", "sensor", ListItem("cell_voltages", n),
            device_class="voltage", state_class=_MEASUREMENT, unit=_V, precision=3, digits=4,
        )
        for n in range(cells)
    ]  # fmt: skip
    rows += [
        EntityDescription(
            f"temperature_{n + 1}", f"Temperature {n + 1}", "sensor", ListItem("temperatures", n),
            device_class="temperature", state_class=_MEASUREMENT, unit=_CELSIUS, precision=1, digits=2,
        )
        for n in range(temperatures)
    ]  # fmt: skip
    rows.append(_fet_row("charge_enabled", "Charge MOSFET", control))
    rows.append(_fet_row("discharge_enabled", "Discharge MOSFET", control))
    rows += [
        EntityDescription(
            f"alarm_{alarm.value}", alarm.value.replace("_", " ").capitalize(), "binary_sensor", _alarm(alarm),
            device_class="problem", category="diagnostic",
            template=f"{{{{ 'ON' if '{alarm.value}' in value_json.alarms else 'OFF' }}}}",
        )
        for alarm in sorted(alarms, key=_ALARM_INDEX.__getitem__)
    ]  # fmt: skip
    rows += _TAIL_ROWS
    return tuple(rows)


def present_entities(
    inputs: StateInputs, *, alarms: Iterable[Alarm] = tuple(Alarm), known: Container[str] = ()
) -> list[EntityDescription]:
    """The entities this battery actually reports, in a stable order.

    Args:
        inputs: the battery's values now.
        alarms: the alarms its protocol can raise.
        known: keys already announced: those rows are left out without being read again (an output
            that announces rows for good asks only about the others on every snapshot).
    """
    snapshot = inputs.snapshot
    rows = _candidates(snapshot.cell_count, len(snapshot.temperatures), frozenset(alarms), inputs.control)
    return [row for row in rows if row.key not in known and row.is_present(inputs)]


def build_state(rows: Iterable[EntityDescription], inputs: StateInputs) -> dict[str, object]:
    """The JSON state message of one battery.

    It holds a value per row, the list of active ``alarms`` and ``attrs`` (attributes per row key).
    """
    state: dict[str, object] = {}
    attrs: dict[str, object] = {}
    state["alarms"] = sorted(alarm.value for alarm in inputs.snapshot.alarms)
    for row in rows:
        if row.template is None:
            state[row.key] = row.encode(inputs)
        if row.attributes is not None:
            attrs[row.key] = dict(row.attributes(inputs))
    state["attrs"] = attrs
    return state


# -- gateway / inverter -----------------------------------------------------------------------------


def _from_provider(inputs: StateInputs) -> StateValue:
    """Inverter rows are fed from the provider mapping by :func:`encode_inverter_state`, not from inputs."""
    return None


INVERTER_ENTITIES: Final[tuple[EntityDescription, ...]] = (
    EntityDescription(
        "charge_voltage_limit", "Charge voltage limit", "sensor", _from_provider,
        device_class="voltage", state_class=_MEASUREMENT, unit=_V, precision=2,
    ),
    EntityDescription(
        "charge_current_limit", "Charge current limit", "sensor", _from_provider,
        device_class="current", state_class=_MEASUREMENT, unit=_A, precision=1,
    ),
    EntityDescription(
        "discharge_current_limit", "Discharge current limit", "sensor",
        _from_provider,
        device_class="current", state_class=_MEASUREMENT, unit=_A, precision=1,
    ),
    EntityDescription(
        "limitation_reason", "Limitation reason", "sensor", _from_provider,
        icon="mdi:information-outline",
    ),
    EntityDescription(
        "bank_stale", "Bank data stale", "binary_sensor", _from_provider,
        device_class="problem",
    ),
)  # fmt: skip
"""Sensors of the inverter/bank status (on the gateway device), fed by the optional provider."""


def encode_inverter_state(status: Mapping[str, object]) -> dict[str, object]:
    """The inverter state message: the provider's mapping with booleans as ``ON``/``OFF``.

    Keys the rows do not know are kept (they are visible as attributes of "Limitation reason").
    """
    state: dict[str, object] = {}
    for key, value in status.items():
        state[key] = (ON if value else OFF) if isinstance(value, bool) else value
    return state

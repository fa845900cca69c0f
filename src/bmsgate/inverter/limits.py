"""Charge voltage and charge/discharge current limits for the inverter (pure, table-driven).

Two layers:

* :func:`pack_targets` — the instantaneous limits one pack's snapshot allows: each current limit is the
  minimum of the configured maximum, any limit the BMS reports, and piecewise-linear curves over cell
  voltage, temperature, MOSFET temperature and (optionally) SoC; a FET that is off or a protection
  alarm for that direction forces 0. The CVL is the configured pack maximum lowered by cell
  over-voltage control.
* :class:`LimitEngine` — turns a bank's per-pack targets into published limits with dynamics:
  decreases apply at once; a limit that reached 0 sticks there until the target exceeds a small
  threshold, holds, then ramps; small rises are ignored (hysteresis); a bulk → float charge-voltage
  state machine; stale data forces both current limits to 0 and never raises the CVL.

Time is an explicit argument (``now``, monotonic seconds); nothing here reads a clock. Every number
is a field of :class:`LimitSettings` (defaults for LiFePO4, see docs/limits.md).

Why one long module: the per-pack targets, the engine's dynamics and the settings that drive both are one
table-driven concept; each number of :class:`LimitSettings` is read in exactly one of the functions here,
and keeping them side by side is what lets a reader check a limit against its setting.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat

from bmsgate.inverter.bank import BankState, bank_current_limit, bank_voltage_limit
from bmsgate.model import Alarm, BatterySnapshot

__all__ = [
    "ChargeMode",
    "Curve",
    "LimitEngine",
    "LimitReason",
    "LimitSettings",
    "Limits",
    "PackTargets",
    "TemperatureDerating",
    "interpolate",
    "pack_targets",
    "temperature_derating",
]

_EPSILON: Final = 1e-9


class LimitReason(enum.StrEnum):
    """Why a limit is below its configured maximum (the value is what users see)."""

    NONE = "none"
    CELL_VOLTAGE = "cell voltage"
    TEMPERATURE = "temperature"
    MOSFET = "MOSFET"
    SOC = "SoC"
    BMS = "BMS"
    STALE_DATA = "stale data"
    RECOVERING = "recovering"
    FLOAT = "float"
    NO_DATA = "no data"


class ChargeMode(enum.StrEnum):
    """Charge voltage regime."""

    BULK = "bulk"
    FLOAT = "float"


def _check_curve(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if not points:
        raise ValueError("a curve needs at least one point")
    xs = [x for x, _ in points]
    if any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError("curve x values must be strictly increasing")
    if any(not 0.0 <= y <= 100.0 for _, y in points):
        raise ValueError("curve y values are percentages in [0, 100]")
    return points


Curve = Annotated[tuple[tuple[float, float], ...], AfterValidator(_check_curve)]
"""Points ``(x, percent of maximum)`` with strictly increasing x; constant beyond both ends."""


def interpolate(points: Sequence[tuple[float, float]], x: float, *, step: bool = False) -> float:
    """Evaluate a curve at `x`.

    Args:
        points: ``(x, y)`` pairs, x strictly increasing.
        x: where to evaluate.
        step: instead of interpolating between two points, use the more restrictive (lower) of
            them; exactly on a point, that point's value.

    Returns:
        y, clamped to the first/last point's value outside the curve.
    """
    xs = [px for px, _ in points]
    if x <= xs[0]:
        return points[0][1]
    if x >= xs[-1]:
        return points[-1][1]
    right = bisect.bisect_right(xs, x)
    (x0, y0), (x1, y1) = points[right - 1], points[right]
    if x == x0:
        return y0
    if step:
        return min(y0, y1)
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


_CHARGE_BLOCKING: Final = frozenset(
    {
        Alarm.CELL_OVERVOLTAGE,
        Alarm.PACK_OVERVOLTAGE,
        Alarm.CHARGE_OVERTEMPERATURE,
        Alarm.CHARGE_UNDERTEMPERATURE,
        Alarm.BATTERY_OVERTEMPERATURE,
        Alarm.BATTERY_UNDERTEMPERATURE,
        Alarm.MOSFET_OVERTEMPERATURE,
        Alarm.CHARGE_OVERCURRENT,
        Alarm.SHORT_CIRCUIT,
        Alarm.CHARGE_SHORT_CIRCUIT,
        Alarm.CHARGE_MOSFET_FAULT,
        Alarm.MOSFET_SOFTWARE_LOCK,
        Alarm.CURRENT_SENSOR_FAULT,
        Alarm.FRONT_END_FAULT,
        Alarm.SYSTEM_FAULT,
    }
)
_DISCHARGE_BLOCKING: Final = frozenset(
    {
        Alarm.CELL_UNDERVOLTAGE,
        Alarm.PACK_UNDERVOLTAGE,
        Alarm.DISCHARGE_OVERTEMPERATURE,
        Alarm.DISCHARGE_UNDERTEMPERATURE,
        Alarm.BATTERY_OVERTEMPERATURE,
        Alarm.MOSFET_OVERTEMPERATURE,
        Alarm.DISCHARGE_OVERCURRENT,
        Alarm.SHORT_CIRCUIT,
        Alarm.DISCHARGE_SHORT_CIRCUIT,
        Alarm.DISCHARGE_MOSFET_FAULT,
        Alarm.MOSFET_SOFTWARE_LOCK,
        Alarm.CURRENT_SENSOR_FAULT,
        Alarm.FRONT_END_FAULT,
        Alarm.SYSTEM_FAULT,
    }
)


class LimitSettings(BaseModel):
    """Every number the limit engine uses; per pack unless stated. Defaults are for LiFePO4.

    Attributes:
        cell_count: cells in series; None takes the count the BMS reports.
        max_cell_voltage: V per cell at the end of bulk (CVL = cells times this).
        float_cell_voltage: V per cell in float.
        min_cell_voltage: V per cell; the lowest CVL over-voltage control may set.
        voltage_drop_offset: V added to the CVL for cable drop.
        full_voltage_tolerance: V below the pack maximum that still counts as "reached".
        float_entry_cell_spread: V; the cell spread at most for the float timer to run.
        float_after: s full and balanced before switching to float.
        bulk_reentry_soc: % below which float returns to bulk.
        bulk_reentry_cell_spread: V cell spread at which float returns to bulk.
        float_ramp_rate: V/s the CVL falls towards float (bank voltage).
        voltage_rise_rate: V/s the CVL may rise.
        cell_overvoltage_gain: V of CVL cut per V that cells exceed `max_cell_voltage` (summed).
        max_charge_current / max_discharge_current: A per pack.
        step_mode: curves step to the lower neighbour instead of interpolating.
        *_curve: ``(x, % of maximum)`` points, see docs/limits.md.
        soc_taper: apply the SoC curves.
        use_bms_limits: honour snapshot extras ``charge_current_limit`` / ``discharge_current_limit`` (A).
        charge_blocking_alarms / discharge_blocking_alarms: alarms forcing that direction to 0.
        zero_threshold: % of the maximum a target must exceed before a zero limit may recover.
        recovery_hold: s the target must stay above that threshold before ramping.
        ramp_rate: A/s a current limit may rise (whole bank).
        hysteresis: A a target must exceed the output by to start a rise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    cell_count: Annotated[int, Field(ge=1, le=64)] | None = None
    max_cell_voltage: PositiveFloat = 3.45
    float_cell_voltage: PositiveFloat = 3.375
    min_cell_voltage: PositiveFloat = 2.90
    voltage_drop_offset: NonNegativeFloat = 0.0
    full_voltage_tolerance: NonNegativeFloat = 0.05
    float_entry_cell_spread: NonNegativeFloat = 0.010
    float_after: NonNegativeFloat = 900.0
    bulk_reentry_soc: Annotated[float, Field(ge=0, le=100)] = 80.0
    bulk_reentry_cell_spread: NonNegativeFloat = 0.080
    float_ramp_rate: PositiveFloat = 0.001
    voltage_rise_rate: PositiveFloat = 0.01
    cell_overvoltage_gain: NonNegativeFloat = 1.0

    max_charge_current: NonNegativeFloat = 100.0
    max_discharge_current: NonNegativeFloat = 100.0
    step_mode: bool = False
    charge_cell_voltage_curve: Curve = ((3.375, 100.0), (3.40, 25.0), (3.425, 5.0), (3.45, 0.5), (3.50, 0.0))
    discharge_cell_voltage_curve: Curve = ((2.80, 0.0), (2.90, 0.5), (3.00, 5.0), (3.10, 25.0), (3.19, 100.0))
    charge_temperature_curve: Curve = (
        (0.0, 0.0), (2.0, 25.0), (5.0, 50.0), (10.0, 100.0),
        (40.0, 100.0), (45.0, 50.0), (50.0, 25.0), (55.0, 0.0),
    )  # fmt: skip
    discharge_temperature_curve: Curve = (
        (-10.0, 0.0), (0.0, 25.0), (5.0, 50.0), (10.0, 100.0),
        (40.0, 100.0), (45.0, 50.0), (50.0, 25.0), (55.0, 0.0),
    )  # fmt: skip
    mosfet_temperature_curve: Curve = ((70.0, 100.0), (80.0, 25.0), (90.0, 0.0))
    soc_taper: bool = False
    charge_soc_curve: Curve = ((85.0, 100.0), (90.0, 50.0), (95.0, 20.0), (98.0, 10.0))
    discharge_soc_curve: Curve = ((5.0, 10.0), (10.0, 20.0), (15.0, 50.0), (20.0, 100.0))
    use_bms_limits: bool = True
    charge_blocking_alarms: frozenset[Alarm] = _CHARGE_BLOCKING
    discharge_blocking_alarms: frozenset[Alarm] = _DISCHARGE_BLOCKING

    zero_threshold: Annotated[float, Field(ge=0, le=100)] = 1.5
    recovery_hold: NonNegativeFloat = 30.0
    ramp_rate: PositiveFloat = 5.0
    hysteresis: NonNegativeFloat = 0.5


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PackTargets:
    """Instantaneous limits one pack allows (before bank scaling and dynamics)."""

    battery_id: str
    charge_current: float
    charge_reason: LimitReason
    discharge_current: float
    discharge_reason: LimitReason
    bulk_voltage: float | None
    """CVL in bulk including cell over-voltage control; None when the cell count is unknown."""
    float_voltage: float | None
    max_voltage: float | None
    min_voltage: float | None
    overvoltage_controlled: bool = False


def _cell_count(snapshot: BatterySnapshot, settings: LimitSettings) -> int | None:
    count = settings.cell_count if settings.cell_count is not None else snapshot.cell_count
    return count or None


def _extra_limit(snapshot: BatterySnapshot, key: str) -> float | None:
    value = snapshot.extras.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(float(value), 0.0)


def _current_target(snapshot: BatterySnapshot, settings: LimitSettings, *, charge: bool) -> tuple[float, LimitReason]:
    maximum = settings.max_charge_current if charge else settings.max_discharge_current
    enabled = snapshot.charge_enabled if charge else snapshot.discharge_enabled
    blocking = settings.charge_blocking_alarms if charge else settings.discharge_blocking_alarms
    if enabled is False or snapshot.alarms & blocking:
        return 0.0, LimitReason.BMS

    step = settings.step_mode
    candidates: list[tuple[float, LimitReason]] = [(maximum, LimitReason.NONE)]

    def percent(points: Curve, x: float | None, reason: LimitReason) -> None:
        if x is not None:
            candidates.append((maximum * interpolate(points, x, step=step) / 100.0, reason))

    cell_max, cell_min = snapshot.cell_max, snapshot.cell_min
    if charge:
        percent(
            settings.charge_cell_voltage_curve,
            cell_max.voltage if cell_max else None,
            LimitReason.CELL_VOLTAGE,
        )
        temperature_curve = settings.charge_temperature_curve
    else:
        percent(
            settings.discharge_cell_voltage_curve,
            cell_min.voltage if cell_min else None,
            LimitReason.CELL_VOLTAGE,
        )
        temperature_curve = settings.discharge_temperature_curve
    # Both ends of the sensor range matter: the coldest cell limits like the hottest one does.
    percent(temperature_curve, snapshot.temperature_min, LimitReason.TEMPERATURE)
    percent(temperature_curve, snapshot.temperature_max, LimitReason.TEMPERATURE)
    percent(settings.mosfet_temperature_curve, snapshot.mosfet_temperature, LimitReason.MOSFET)
    if settings.soc_taper:
        soc_curve = settings.charge_soc_curve if charge else settings.discharge_soc_curve
        percent(soc_curve, snapshot.soc, LimitReason.SOC)
    if settings.use_bms_limits:
        reported = _extra_limit(snapshot, "charge_current_limit" if charge else "discharge_current_limit")
        if reported is not None:
            candidates.append((reported, LimitReason.BMS))
    # min() keeps the first of equal values, so the configured maximum wins ties ("no limitation").
    value, reason = min(candidates, key=lambda candidate: candidate[0])
    return max(value, 0.0), reason


def pack_targets(snapshot: BatterySnapshot, settings: LimitSettings) -> PackTargets:
    """The limits one pack's snapshot allows right now (pure; no dynamics).

    Args:
        snapshot: the pack's reading (fresh or the last one of a stale pack).
        settings: limit configuration.

    Returns:
        Current limits with their reasons and the pack's bulk/float charge voltages.
    """
    charge, charge_reason = _current_target(snapshot, settings, charge=True)
    discharge, discharge_reason = _current_target(snapshot, settings, charge=False)
    cells = _cell_count(snapshot, settings)
    if cells is None:
        return PackTargets(
            battery_id=snapshot.battery_id,
            charge_current=charge,
            charge_reason=charge_reason,
            discharge_current=discharge,
            discharge_reason=discharge_reason,
            bulk_voltage=None,
            float_voltage=None,
            max_voltage=None,
            min_voltage=None,
        )
    offset = settings.voltage_drop_offset
    max_voltage = cells * settings.max_cell_voltage + offset
    min_voltage = cells * settings.min_cell_voltage + offset
    excess = math.fsum(max(v - settings.max_cell_voltage, 0.0) for v in snapshot.cell_voltages)
    bulk = min(max(max_voltage - settings.cell_overvoltage_gain * excess, min_voltage), max_voltage)
    return PackTargets(
        battery_id=snapshot.battery_id,
        charge_current=charge,
        charge_reason=charge_reason,
        discharge_current=discharge,
        discharge_reason=discharge_reason,
        bulk_voltage=bulk,
        float_voltage=min(cells * settings.float_cell_voltage + offset, bulk),
        max_voltage=max_voltage,
        min_voltage=min_voltage,
        overvoltage_controlled=bulk < max_voltage - _EPSILON,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What the inverter is told, with the reasons.

    Attributes:
        charge_voltage: CVL, V; None before any pack reported a cell count.
        charge_current / discharge_current: CCL / DCL, A, for the whole bank.
        charge_reason / discharge_reason / voltage_reason: what limits each one.
        charge_mode: bulk or float.
        stale: no fresh pack: both current limits are 0 and the CVL was not raised.
        max_charge_current / max_discharge_current: the configured maxima for the whole bank.
        max_voltage / min_voltage: configured pack voltage bounds (cells times max / min cell voltage).
    """

    charge_voltage: float | None
    charge_current: float
    discharge_current: float
    charge_reason: LimitReason
    discharge_reason: LimitReason
    voltage_reason: LimitReason
    charge_mode: ChargeMode
    stale: bool
    max_charge_current: float
    max_discharge_current: float
    max_voltage: float | None = None
    min_voltage: float | None = None

    @property
    def charge_allowed(self) -> bool:
        """CCL above zero."""
        return self.charge_current > 0.0

    @property
    def discharge_allowed(self) -> bool:
        """DCL above zero."""
        return self.discharge_current > 0.0

    @property
    def reason(self) -> LimitReason:
        """The one reason to show: missing data first, then whichever current limit is more reduced."""
        if self.stale:
            return self.charge_reason  # "stale data", or "no data" before the first reading
        charge_cut = _fraction_cut(self.charge_current, self.max_charge_current)
        discharge_cut = _fraction_cut(self.discharge_current, self.max_discharge_current)
        if charge_cut == 0.0 and discharge_cut == 0.0:
            return self.voltage_reason if self.voltage_reason is not LimitReason.FLOAT else LimitReason.NONE
        return self.charge_reason if charge_cut >= discharge_cut else self.discharge_reason

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "charge_voltage": None if self.charge_voltage is None else round(self.charge_voltage, 3),
            "charge_current": round(self.charge_current, 2),
            "discharge_current": round(self.discharge_current, 2),
            "charge_reason": self.charge_reason.value,
            "discharge_reason": self.discharge_reason.value,
            "voltage_reason": self.voltage_reason.value,
            "reason": self.reason.value,
            "charge_mode": self.charge_mode.value,
            "stale": self.stale,
            "max_charge_current": round(self.max_charge_current, 2),
            "max_discharge_current": round(self.max_discharge_current, 2),
            "max_voltage": None if self.max_voltage is None else round(self.max_voltage, 3),
            "min_voltage": None if self.min_voltage is None else round(self.min_voltage, 3),
        }


def _fraction_cut(value: float, maximum: float) -> float:
    return 0.0 if maximum <= 0 else max(1.0 - value / maximum, 0.0)


@dataclasses.dataclass(slots=True)
class _CurrentLimiter:
    """Dynamics of one current limit: immediate decreases, zero-stick, hold, ramp, hysteresis."""

    output: float | None = None
    at_zero: bool = False
    above_since: float | None = None
    rising: bool = False

    def step(self, target: float, now: float, dt: float, maximum: float, settings: LimitSettings) -> float:
        if self.output is None:
            self.output = target
            self.at_zero = target <= _EPSILON
            return target
        if target <= self.output:
            self.output = target
            self.rising = False
            if target <= _EPSILON:
                self.at_zero, self.above_since = True, None
            return target
        if self.at_zero:
            if target <= maximum * settings.zero_threshold / 100.0:
                self.above_since = None
                return self.output
            if self.above_since is None:
                self.above_since = now
            if now - self.above_since < settings.recovery_hold:
                return self.output
            self.at_zero, self.above_since, self.rising = False, None, True
        if not self.rising and target - self.output <= settings.hysteresis:
            return self.output
        self.rising = True
        self.output = min(target, self.output + settings.ramp_rate * dt)
        if self.output >= target - _EPSILON:
            self.rising = False
        return self.output

    def force_zero(self) -> None:
        self.output, self.at_zero, self.above_since, self.rising = 0.0, True, None, False


def _has_temperatures(snapshot: BatterySnapshot) -> bool:
    return snapshot.temperature_min is not None


def _has_cells(snapshot: BatterySnapshot) -> bool:
    return snapshot.cell_max is not None


def _has_mosfet_temperature(snapshot: BatterySnapshot) -> bool:
    return snapshot.mosfet_temperature is not None


def _has_soc(snapshot: BatterySnapshot) -> bool:
    return snapshot.soc is not None


_READINGS: Final[tuple[tuple[str, Callable[[BatterySnapshot], bool]], ...]] = (
    ("temperatures", _has_temperatures),
    ("cell voltages", _has_cells),
    ("MOSFET temperature", _has_mosfet_temperature),
    ("SoC", _has_soc),
)
"""The readings the current curves use: a pack that reported one and then lacks it (a sensor dropped out, a
frame that did not come) must not get limits that reading would have lowered."""


def _readings_of(snapshot: BatterySnapshot) -> frozenset[str]:
    return frozenset(name for name, present in _READINGS if present(snapshot))


def _held(fresh: PackTargets, before: PackTargets) -> PackTargets:
    """`fresh`, never above `before`: limits are not raised because a reading went missing (they may fall)."""
    charge, charge_reason = fresh.charge_current, fresh.charge_reason
    if before.charge_current < charge:
        charge, charge_reason = before.charge_current, LimitReason.NO_DATA
    discharge, discharge_reason = fresh.discharge_current, fresh.discharge_reason
    if before.discharge_current < discharge:
        discharge, discharge_reason = before.discharge_current, LimitReason.NO_DATA
    return dataclasses.replace(
        fresh,
        charge_current=charge,
        charge_reason=charge_reason,
        discharge_current=discharge,
        discharge_reason=discharge_reason,
    )


class LimitEngine:
    """Stateful limit dynamics for one bank. Feed it every bank update with the current time.

    Args:
        settings: limit configuration.
    """

    def __init__(self, settings: LimitSettings | None = None) -> None:
        self.settings = settings or LimitSettings()
        self._charge = _CurrentLimiter()
        self._discharge = _CurrentLimiter()
        self._voltage: float | None = None
        self._mode = ChargeMode.BULK
        self._full_since: float | None = None
        self._last_now: float | None = None
        self._last: Limits | None = None
        self._targets: dict[str, tuple[BatterySnapshot, LimitSettings, PackTargets]] = {}
        """Each pack's targets with the snapshot and settings they came from: a pure function of both
        (unless a reading went missing, see `_held`), and of the bank's packs only one has a new snapshot
        per update."""
        self._readings: dict[str, frozenset[str]] = {}
        """The readings each present pack has reported since it joined the bank."""

    @property
    def last(self) -> Limits | None:
        """The most recent result."""
        return self._last

    def update(self, bank: BankState, now: float) -> Limits:
        """Compute the limits for `bank` at monotonic time `now` (seconds).

        Args:
            bank: the aggregated bank; its stale packs' last snapshots still restrict the limits.
            now: monotonic time; must not go backwards (a backwards step counts as no time passing).

        Returns:
            The limits to publish.
        """
        settings = self.settings
        dt = 0.0 if self._last_now is None else max(now - self._last_now, 0.0)
        self._last_now = now
        max_charge = settings.max_charge_current * bank.pack_count
        max_discharge = settings.max_discharge_current * bank.pack_count
        targets = self._pack_targets((*bank.online, *bank.offline))
        max_voltage = bank_voltage_limit(t.max_voltage for t in targets)
        min_voltage = bank_voltage_limit(t.min_voltage for t in targets)

        if bank.stale:
            # Held, never raised while blind; the packs' last known limits may still lower it.
            last_bulk = bank_voltage_limit(t.bulk_voltage for t in targets)
            if self._voltage is not None and last_bulk is not None:
                self._voltage = min(self._voltage, last_bulk)
            if bank.ever_seen:
                self._charge.force_zero()
                self._discharge.force_zero()
            reason = LimitReason.STALE_DATA if bank.ever_seen else LimitReason.NO_DATA
            self._last = Limits(
                charge_voltage=self._voltage,
                charge_current=0.0,
                discharge_current=0.0,
                charge_reason=reason,
                discharge_reason=reason,
                voltage_reason=reason,
                charge_mode=self._mode,
                stale=True,
                max_charge_current=max_charge,
                max_discharge_current=max_discharge,
                max_voltage=max_voltage,
                min_voltage=min_voltage,
            )
            return self._last

        charge_target, charge_reason = self._bank_target(targets, bank, charge=True)
        discharge_target, discharge_reason = self._bank_target(targets, bank, charge=False)
        voltage, voltage_reason = self._voltage_step(targets, bank, now, dt)
        if voltage is None or voltage_reason is LimitReason.NO_DATA:
            # No charge voltage can be computed (no pack reports its cells, at start-up or later): a charge
            # current without a voltage to stop at is never safe, whatever the current curves allow; a
            # voltage held from earlier cells is not a reason to keep charging.
            charge_target, charge_reason = 0.0, LimitReason.NO_DATA
        bank_max_charge = settings.max_charge_current * bank.packs_online
        bank_max_discharge = settings.max_discharge_current * bank.packs_online
        charge = self._charge.step(charge_target, now, dt, bank_max_charge, settings)
        discharge = self._discharge.step(discharge_target, now, dt, bank_max_discharge, settings)
        self._last = Limits(
            charge_voltage=voltage,
            charge_current=charge,
            discharge_current=discharge,
            charge_reason=charge_reason if charge >= charge_target - _EPSILON else LimitReason.RECOVERING,
            discharge_reason=(discharge_reason if discharge >= discharge_target - _EPSILON else LimitReason.RECOVERING),
            voltage_reason=voltage_reason,
            charge_mode=self._mode,
            stale=False,
            max_charge_current=max_charge,
            max_discharge_current=max_discharge,
            max_voltage=max_voltage,
            min_voltage=min_voltage,
        )
        return self._last

    def _pack_targets(self, snapshots: Sequence[BatterySnapshot]) -> list[PackTargets]:
        settings = self.settings
        known = self._targets
        targets: list[PackTargets] = []
        current: dict[str, tuple[BatterySnapshot, LimitSettings, PackTargets]] = {}
        readings: dict[str, frozenset[str]] = {}
        for snapshot in snapshots:
            battery = snapshot.battery_id
            cached = known.get(battery)
            reported = self._readings.get(battery, frozenset())
            if cached is not None and cached[0] is snapshot and cached[1] is settings:
                entry = cached
            else:
                fresh = pack_targets(snapshot, settings)
                present = _readings_of(snapshot)
                if cached is not None and reported - present:
                    fresh = _held(fresh, cached[2])
                entry = (snapshot, settings, fresh)
                reported |= present
            current[battery] = entry
            readings[battery] = reported
            targets.append(entry[2])
        # Only the bank's present packs are kept: a removed pack's snapshot is not held forever.
        self._targets = current
        self._readings = readings
        return targets

    def _bank_target(
        self, targets: Sequence[PackTargets], bank: BankState, *, charge: bool
    ) -> tuple[float, LimitReason]:
        per_pack = [t.charge_current if charge else t.discharge_current for t in targets]
        value = bank_current_limit(per_pack, bank.packs_online)
        limiting = min(targets, key=lambda t: t.charge_current if charge else t.discharge_current)
        reason = limiting.charge_reason if charge else limiting.discharge_reason
        if reason is LimitReason.NONE and bank.missing_ids:
            # Fewer packs online is the only thing holding the bank below its configured maximum.
            reason = LimitReason.STALE_DATA
        return value, reason

    def _voltage_step(
        self, targets: Sequence[PackTargets], bank: BankState, now: float, dt: float
    ) -> tuple[float | None, LimitReason]:
        settings = self.settings
        bulk = bank_voltage_limit(t.bulk_voltage for t in targets)
        floating = bank_voltage_limit(t.float_voltage for t in targets)
        if bulk is None or floating is None:
            return self._voltage, LimitReason.NO_DATA
        self._advance_mode(targets, bank, now)
        overvoltage = any(t.overvoltage_controlled for t in targets)
        target = bulk if self._mode is ChargeMode.BULK else min(floating, bulk)
        previous = self._voltage
        if previous is None or target > previous:
            voltage = target if previous is None else min(target, previous + settings.voltage_rise_rate * dt)
        elif self._mode is ChargeMode.FLOAT:
            # Entering float is gentle, but over-voltage control still cuts at once.
            voltage = min(bulk, max(target, previous - settings.float_ramp_rate * dt))
        else:
            voltage = target
        self._voltage = voltage
        if overvoltage:
            reason = LimitReason.CELL_VOLTAGE
        elif self._mode is ChargeMode.FLOAT:
            reason = LimitReason.FLOAT
        else:
            reason = LimitReason.NONE
        return voltage, reason

    def _advance_mode(self, targets: Sequence[PackTargets], bank: BankState, now: float) -> None:
        settings = self.settings
        spread = bank.cell_delta
        if self._mode is ChargeMode.FLOAT:
            low_soc = bank.soc is not None and bank.soc < settings.bulk_reentry_soc
            unbalanced = spread is not None and spread >= settings.bulk_reentry_cell_spread
            if low_soc or unbalanced:
                self._mode, self._full_since = ChargeMode.BULK, None
            return
        # `targets` lists the online packs first, in the same order.
        full = all(
            snapshot.voltage is not None
            and target.max_voltage is not None
            and snapshot.voltage >= target.max_voltage - settings.voltage_drop_offset - settings.full_voltage_tolerance
            for snapshot, target in zip(bank.online, targets[: len(bank.online)], strict=True)
        )
        balanced = spread is not None and spread <= settings.float_entry_cell_spread
        if not (full and balanced):
            self._full_since = None
            return
        if self._full_since is None:
            self._full_since = now
        if now - self._full_since >= settings.float_after:
            self._mode, self._full_since = ChargeMode.FLOAT, None


@dataclasses.dataclass(frozen=True, slots=True)
class TemperatureDerating:
    """Which end of the temperature curves derates the bank now (each flag is its own condition).

    The limit engine's reason says "temperature" without saying whether heat or cold caused it; an
    inverter's warning bits must not guess (a hot fault with a cool sensor is not a cold warning).

    Attributes:
        charge_cold / charge_hot: the coldest / hottest online sensor is below / above the charge
            temperature curve's full-current plateau and the curve derates there.
        discharge_cold / discharge_hot: the same for the discharge curve.
    """

    charge_cold: bool = False
    charge_hot: bool = False
    discharge_cold: bool = False
    discharge_hot: bool = False

    @property
    def cold(self) -> bool:
        """Cold derates charging or discharging."""
        return self.charge_cold or self.discharge_cold

    @property
    def hot(self) -> bool:
        """Heat derates charging or discharging."""
        return self.charge_hot or self.discharge_hot


def temperature_derating(bank: BankState, settings: LimitSettings) -> TemperatureDerating:
    """Whether the bank's coldest / hottest sensor is in the cold / hot derating range of each curve (pure)."""
    coldest, hottest = bank.temperature_min, bank.temperature_max
    step = settings.step_mode

    def ends(curve: Curve) -> tuple[bool, bool]:
        top, plateau_start, plateau_end = _plateau(curve)
        cold = coldest is not None and coldest < plateau_start and interpolate(curve, coldest, step=step) < top
        hot = hottest is not None and hottest > plateau_end and interpolate(curve, hottest, step=step) < top
        return cold, hot

    charge_cold, charge_hot = ends(settings.charge_temperature_curve)
    discharge_cold, discharge_hot = ends(settings.discharge_temperature_curve)
    return TemperatureDerating(
        charge_cold=charge_cold, charge_hot=charge_hot, discharge_cold=discharge_cold, discharge_hot=discharge_hot
    )


@functools.lru_cache(maxsize=32)
def _plateau(curve: Curve) -> tuple[float, float, float]:
    """A curve's highest value and where its plateau at that value starts and ends (per curve, not per call)."""
    top = max(y for _, y in curve)
    plateau = [x for x, y in curve if y == top]
    return top, plateau[0], plateau[-1]

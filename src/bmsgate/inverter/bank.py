"""Aggregate several packs into one virtual battery for the inverter (pure).

An inverter sees one battery, however many packs are paralleled behind the gateway. The rules (see
docs/limits.md) are those real multi-pack setups use: current is the sum, voltage the mean, SoC the
capacity-weighted mean (but the extreme pack near empty or full), alarms are OR-ed, and the bank's
current limit is the smallest per-pack limit times the number of packs online.

Only fresh packs count as online. A stale pack drops out of the measurements and of the pack count,
but its last snapshot is kept (as ``offline``) so the limit engine can still let its last known limit
restrict the bank: a pack that goes silent must never *raise* a limit. A bank without any fresh pack is
stale itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from bmsgate.model import Alarm, BatterySnapshot, PackQuantities

__all__ = [
    "DEFAULT_SOC_EXTREME_BAND",
    "BankState",
    "PackInput",
    "aggregate",
    "bank_current_limit",
    "bank_voltage_limit",
]

DEFAULT_SOC_EXTREME_BAND: Final = 5.0
"""Within this many % of empty (full), the bank reports its emptiest (fullest) pack's SoC."""


@dataclasses.dataclass(frozen=True, slots=True)
class PackInput:
    """One pack as the hub sees it: its newest snapshot (if any) and whether that is stale."""

    battery_id: str
    snapshot: BatterySnapshot | None
    stale: bool
    age: float | None = None
    """Seconds since the snapshot reached the hub (None when there is none)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BankState(PackQuantities):
    """The virtual battery presented to the inverter.

    Measurements come from online (fresh) packs only; they are None when no online pack reports them.

    Attributes:
        battery_ids: every configured pack, in configuration order.
        online: snapshots of the fresh packs.
        offline: last snapshots of stale packs (measurements ignore them; limits may not).
        missing_ids: ids of stale packs, including those that never reported.
        voltage: mean pack voltage, V.
        current: sum of pack currents, A, positive while charging.
        soc: capacity-weighted SoC, %, or the extreme pack's SoC near 0 % / 100 %.
        soh: capacity-weighted SoH, %.
        remaining_capacity / full_capacity: sums, Ah.
        temperature_min / temperature_max: coldest / hottest NTC over all online packs, °C.
        temperature_mean: mean of the packs' mean NTC temperatures, °C.
        mosfet_temperature: hottest power stage, °C.
        cell_voltage_min / cell_voltage_max: lowest / highest cell over all online packs, V.
        cell_delta: the largest per-pack cell spread, V (spread across packs is not balancing).
        alarms: union of the online packs' alarms.
        charge_enabled / discharge_enabled: every online pack's FET is on (None when none reports).
        max_age: age of the oldest online snapshot, s.
    """

    battery_ids: tuple[str, ...]
    online: tuple[BatterySnapshot, ...] = ()
    offline: tuple[BatterySnapshot, ...] = ()
    missing_ids: tuple[str, ...] = ()
    voltage: float | None = None
    current: float | None = None
    soc: float | None = None
    soh: float | None = None
    remaining_capacity: float | None = None
    full_capacity: float | None = None
    temperature_min: float | None = None
    temperature_max: float | None = None
    temperature_mean: float | None = None
    mosfet_temperature: float | None = None
    cell_voltage_min: float | None = None
    cell_voltage_max: float | None = None
    cell_delta: float | None = None
    alarms: frozenset[Alarm] = frozenset()
    charge_enabled: bool | None = None
    discharge_enabled: bool | None = None
    max_age: float | None = None

    @property
    def pack_count(self) -> int:
        """Number of configured packs."""
        return len(self.battery_ids)

    @property
    def packs_online(self) -> int:
        """Number of packs with fresh data."""
        return len(self.online)

    @property
    def stale(self) -> bool:
        """No pack has fresh data: nothing about the bank may be presented as current."""
        return not self.online

    @property
    def ever_seen(self) -> bool:
        """At least one pack has reported at some time (distinguishes start-up from a failure)."""
        return bool(self.online or self.offline)

    @property
    def degraded(self) -> bool:
        """Some, but not all, packs are stale."""
        return bool(self.online) and bool(self.missing_ids)

    @property
    def full_energy(self) -> float | None:
        """Wh when full (full Ah times mean voltage)."""
        if self.full_capacity is None or self.voltage is None:
            return None
        return self.full_capacity * self.voltage

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for diagnostics and the Home Assistant sink)."""
        return {
            "battery_ids": list(self.battery_ids),
            "online_ids": [snapshot.battery_id for snapshot in self.online],
            "missing_ids": list(self.missing_ids),
            "pack_count": self.pack_count,
            "packs_online": self.packs_online,
            "stale": self.stale,
            "voltage": _round(self.voltage, 3),
            "current": _round(self.current, 3),
            "power": _round(self.power, 1),
            "soc": _round(self.soc, 1),
            "soh": _round(self.soh, 1),
            "remaining_capacity": _round(self.remaining_capacity, 3),
            "full_capacity": _round(self.full_capacity, 3),
            "temperature_min": _round(self.temperature_min, 2),
            "temperature_max": _round(self.temperature_max, 2),
            "temperature_mean": _round(self.temperature_mean, 2),
            "mosfet_temperature": _round(self.mosfet_temperature, 2),
            "cell_voltage_min": _round(self.cell_voltage_min, 4),
            "cell_voltage_max": _round(self.cell_voltage_max, 4),
            "cell_delta": _round(self.cell_delta, 4),
            "alarms": sorted(alarm.value for alarm in self.alarms),
            "charge_enabled": self.charge_enabled,
            "discharge_enabled": self.discharge_enabled,
            "max_age": _round(self.max_age, 1),
        }


def aggregate(packs: Sequence[PackInput], *, soc_extreme_band: float = DEFAULT_SOC_EXTREME_BAND) -> BankState:
    """Combine packs into one bank; stale packs drop out of every measurement.

    Args:
        packs: every configured pack, in configuration order.
        soc_extreme_band: near empty / full (within this many %), report the extreme pack's SoC so
            the inverter stops before any single pack is over-driven.

    Returns:
        The bank; stale (``bank.stale``) when no pack is fresh.
    """
    # One pass per list: a controller aggregates its whole bank on every snapshot of any pack.
    ids: list[str] = []
    online_packs: list[BatterySnapshot] = []
    offline_packs: list[BatterySnapshot] = []
    missing: list[str] = []
    ages: list[float] = []
    for pack in packs:
        ids.append(pack.battery_id)
        snapshot = pack.snapshot
        if pack.stale or snapshot is None:
            missing.append(pack.battery_id)
        if pack.stale:
            if snapshot is not None:
                offline_packs.append(snapshot)
        else:
            if snapshot is not None:
                online_packs.append(snapshot)
            if pack.age is not None:
                ages.append(pack.age)
    online, offline = tuple(online_packs), tuple(offline_packs)
    if not online:
        return BankState(battery_ids=tuple(ids), offline=offline, missing_ids=tuple(missing))

    voltages: list[float] = []
    currents: list[float] = []
    remaining: list[float] = []
    capacities: list[float] = []
    temperature_means: list[float] = []
    mosfets: list[float] = []
    coldest: list[float] = []
    hottest: list[float] = []
    lowest_cells: list[float] = []
    highest_cells: list[float] = []
    deltas: list[float] = []
    charge: list[bool] = []
    discharge: list[bool] = []
    for s in online:
        if s.voltage is not None:
            voltages.append(s.voltage)
        if s.current is not None:
            currents.append(s.current)
        if s.remaining_capacity is not None:
            remaining.append(s.remaining_capacity)
        capacity = _capacity(s)
        if capacity is not None:
            capacities.append(capacity)
        if s.temperatures:
            coldest.append(min(s.temperatures))
            hottest.append(max(s.temperatures))
            mean = s.temperature_mean
            if mean is not None:
                temperature_means.append(mean)
        if s.mosfet_temperature is not None:
            mosfets.append(s.mosfet_temperature)
        if s.cell_voltages:
            low, high = min(s.cell_voltages), max(s.cell_voltages)
            lowest_cells.append(low)
            highest_cells.append(high)
            deltas.append(high - low)  # the pack's own spread, as BatterySnapshot.cell_delta
        if s.charge_enabled is not None:
            charge.append(s.charge_enabled)
        if s.discharge_enabled is not None:
            discharge.append(s.discharge_enabled)
    return BankState(
        battery_ids=tuple(ids),
        online=online,
        offline=offline,
        missing_ids=tuple(missing),
        voltage=math.fsum(voltages) / len(voltages) if voltages else None,
        current=math.fsum(currents) if currents else None,
        soc=_bank_soc(online, soc_extreme_band),
        soh=_weighted_mean(online, lambda s: s.soh),
        remaining_capacity=math.fsum(remaining) if remaining else None,
        full_capacity=math.fsum(capacities) if capacities else None,
        temperature_min=min(coldest) if coldest else None,
        temperature_max=max(hottest) if hottest else None,
        temperature_mean=math.fsum(temperature_means) / len(temperature_means) if temperature_means else None,
        mosfet_temperature=max(mosfets) if mosfets else None,
        cell_voltage_min=min(lowest_cells) if lowest_cells else None,
        cell_voltage_max=max(highest_cells) if highest_cells else None,
        cell_delta=max(deltas) if deltas else None,
        alarms=frozenset().union(*(s.alarms for s in online)),
        charge_enabled=all(charge) if charge else None,
        discharge_enabled=all(discharge) if discharge else None,
        max_age=max(ages) if ages else None,
    )


def bank_current_limit(per_pack_limits: Sequence[float], packs_online: int) -> float:
    """The bank's current limit: the smallest per-pack limit times the packs online.

    `per_pack_limits` may include the last known limits of stale packs: they restrict the bank
    without adding capacity, so a pack dropping out can only lower the result.
    """
    if not per_pack_limits or packs_online <= 0:
        return 0.0
    return max(min(per_pack_limits), 0.0) * packs_online


def bank_voltage_limit(per_pack_limits: Iterable[float | None]) -> float | None:
    """The bank's charge voltage limit: the lowest per-pack limit (None when no pack has one)."""
    known = [limit for limit in per_pack_limits if limit is not None]
    return min(known) if known else None


# -- helpers ------------------------------------------------------------------------------------


def _capacity(snapshot: BatterySnapshot) -> float | None:
    return snapshot.full_capacity if snapshot.full_capacity is not None else snapshot.design_capacity


def _bank_soc(online: Sequence[BatterySnapshot], extreme_band: float) -> float | None:
    socs = [s.soc for s in online if s.soc is not None]
    if not socs:
        return None
    if min(socs) <= extreme_band:
        return min(socs)
    if max(socs) >= 100.0 - extreme_band:
        return max(socs)
    return _weighted_mean(online, lambda s: s.soc)


def _weighted_mean(
    online: Sequence[BatterySnapshot], value_of: Callable[[BatterySnapshot], float | None]
) -> float | None:
    """Capacity-weighted mean; equal weights when any pack with a value lacks a capacity."""
    pairs = [(value, _capacity(s)) for s in online if (value := value_of(s)) is not None]
    if not pairs:
        return None
    weights = [weight for _, weight in pairs if weight is not None and weight > 0]
    if len(weights) == len(pairs):
        return math.fsum(value * weight for (value, _), weight in zip(pairs, weights, strict=True)) / math.fsum(weights)
    return math.fsum(value for value, _ in pairs) / len(pairs)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)

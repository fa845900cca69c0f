"""Inverter CAN profiles as data, and frame building from bank, limits and freshness (pure).

A profile is a YAML file (format in docs/can.md) plus the DBC file it names: which frames go out, how
often, their DLC, the manufacturer name, the inverter's keep-alive (or request) id, and quirks. Built-in
profiles ship under ``bmsgate/data/can/``; users point ``CanSettings.profile`` at their own YAML. Each
DBC signal is fed from a *source* of the same name (or the name the profile's ``signals`` table maps it
to): a number in SI units (``charge_voltage_limit``, ``soc``, ...), a flag (``protect_high_voltage``,
``charge_enable``, ...; a 1-bit signal carries it as 1/0, a 2-bit signal as SMA's pair "01 raised /
10 cleared"), a character of the manufacturer name (``manufacturer_0``…``_7``), a constant from the
profile, or "invalid". Everything is checked once, at load; problems are
:class:`~bmsgate.errors.DefinitionError` naming the file, the entry and the reason.

:func:`build_frames` is the whole encoder: ``(profile, status, phase, requests) -> frames``. Quirks are
applied in :func:`wire_values` before encoding, so a test can see exactly what the inverter is told.

Why one long module: the sources (:func:`wire_values`) and the DBC encoders compiled from them are one
contract — a profile is valid only if every signal it sends has a source here — and a profile is
compiled against both at once.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

from bmsgate.errors import DefinitionError
from bmsgate.inverter import alarm_groups as groups
from bmsgate.inverter.bank import BankState, PackInput, aggregate
from bmsgate.inverter.can.dbc import DbcDatabase, DbcMessage, DbcSignal, load_dbc_text
from bmsgate.inverter.can.definition import CanProfileDefinition, ProfileQuirks
from bmsgate.inverter.limits import LimitReason
from bmsgate.inverter.phases import OutputPhase, Requests
from bmsgate.inverter.status import FlowDirection, InverterStatus
from bmsgate.model import Alarm, BatterySnapshot

__all__ = [
    "FLAG_SOURCES",
    "NUMBER_SOURCES",
    "CanFrame",
    "CanProfile",
    "OutputPhase",
    "ProfileQuirks",
    "Requests",
    "build_frames",
    "compile_profile",
    "decode_frames",
    "load_profile",
    "wire_values",
]

_NO_REQUESTS: Final = Requests()
_MANUFACTURER_SIGNAL: Final = re.compile(r"manufacturer_([0-7])")


@dataclasses.dataclass(frozen=True, slots=True)
class CanFrame:
    """One CAN frame as sent (python-can free)."""

    arbitration_id: int
    data: bytes
    is_extended_id: bool = False

    def candump(self) -> str:
        """The frame in can-utils' compact form, e.g. ``351#1402E803E803``."""
        width = 8 if self.is_extended_id else 3
        return f"{self.arbitration_id:0{width}X}#{self.data.hex().upper()}"


# -- sources ----------------------------------------------------------------------------------------

_Wire = Mapping[str, float | bool | None]
"""Wire-level values by source name (after quirks)."""


NUMBER_SOURCES: Final = frozenset(
    {
        "charge_voltage_limit",
        "charge_current_limit",
        "discharge_current_limit",
        "discharge_voltage_limit",
        "soc",
        "soh",
        "voltage",
        "current",
        "temperature",
        "temperature_min",
        "temperature_max",
        "cell_voltage_min",
        "cell_voltage_max",
        "cell_delta",
        "remaining_capacity",
        "full_capacity",
        "cycles",
        "pack_count",
        "packs_online",
        "cell_count",
        "cell_voltage_max_number",
        "cell_voltage_min_number",
        "protecting_pack",
        "flow_state",
        "modules_online",
        "modules_offline",
        "modules_blocking_charge",
        "modules_blocking_discharge",
    }
)
"""Numeric sources, SI units (V, A, °C, %, Ah); the DBC's scale and offset give the wire unit.

Besides these, ``cell_voltage_1`` … ``cell_voltage_64`` (V) are cell voltages by 1-based cell number.
The ``modules_*`` counts are Victron's 0x372: packs online / offline (in the safe phase 0 online, all
offline) and online packs whose charge / discharge FET is off.
"""

_ID_SOURCE: Final = re.compile(r"(min_voltage|max_voltage|min_temperature|max_temperature)_id_([0-7])")
"""Characters 0-7 of the id of the pack/cell (``P1C07``) or pack/sensor (``P1T2``) holding an extreme
(Victron 0x374-0x377); NUL past the end, all NUL when unknown or in the safe phase."""
_ID_TEXTS: Final = ("min_voltage", "max_voltage", "min_temperature", "max_temperature")
_ID_CHAR_SOURCES: Final = {name: tuple(f"{name}_id_{i}" for i in range(8)) for name in _ID_TEXTS}
"""Each id text's eight character sources, named once (not 32 f-strings per frame set)."""

_CELL_VOLTAGE_SOURCE: Final = re.compile(r"cell_voltage_([1-9]|[1-5][0-9]|6[0-4])")
_CELL_VOLTAGE_SOURCES: Final = tuple(f"cell_voltage_{n}" for n in range(1, 65))
"""The per-cell sources by 0-based cell index, named once (not 16 f-strings per frame set)."""
_CELL_NUMBER_SOURCES: Final = frozenset({"cell_voltage_max_number", "cell_voltage_min_number"})
_MIN_BITS: Final = {"flow_state": 2, "soh": 7}
"""Number sources that fit fewer than the usual 8 bits (a 2-bit state code; Growatt's 7-bit SoH)."""
_FLOW_STATE: Final = {FlowDirection.IDLE: 1.0, FlowDirection.CHARGING: 2.0, FlowDirection.DISCHARGING: 3.0}
"""Growatt 0x311 state code: 0b01 idle, 0b10 charging, 0b11 discharging."""

_CONDITIONS: Final = (
    "high_voltage",
    "low_voltage",
    "high_temperature",
    "low_temperature",
    "high_temperature_charge",
    "low_temperature_charge",
    "discharge_high_current",
    "charge_high_current",
    "short_circuit",
    "system_error",
    "internal_communication",
    "cell_imbalance",
    "general",
)
_PROTECT_SOURCES: Final = {condition: f"protect_{condition}" for condition in _CONDITIONS}
_WARN_SOURCES: Final = {condition: f"warn_{condition}" for condition in _CONDITIONS}
FLAG_SOURCES: Final = frozenset(
    {f"{level}_{condition}" for level in ("protect", "warn") for condition in _CONDITIONS}
    | {"charge_enable", "discharge_enable", "force_charge_1", "force_charge_2", "full_charge_request"}
)
"""Boolean sources: ``protect_*`` (protection, BMS acted) and ``warn_*`` (alarm/warning level)."""


def _protections(alarms: frozenset[Alarm], safe: bool) -> dict[str, bool]:
    # In the safe phase the bank data is too old to trust: report it as a BMS/communication failure.
    flags = {
        "high_voltage": groups.any_of(alarms, groups.HIGH_VOLTAGE),
        "low_voltage": groups.any_of(alarms, groups.LOW_VOLTAGE),
        "high_temperature": groups.any_of(alarms, groups.HIGH_TEMPERATURE),
        "low_temperature": groups.any_of(alarms, groups.LOW_TEMPERATURE),
        "high_temperature_charge": Alarm.CHARGE_OVERTEMPERATURE in alarms,
        "low_temperature_charge": Alarm.CHARGE_UNDERTEMPERATURE in alarms,
        "discharge_high_current": groups.any_of(alarms, groups.DISCHARGE_CURRENT),
        "charge_high_current": groups.any_of(alarms, groups.CHARGE_CURRENT),
        "short_circuit": groups.any_of(alarms, groups.SHORT_CIRCUIT),
        "system_error": safe or groups.any_of(alarms, groups.SYSTEM),
        "internal_communication": safe or Alarm.INTERNAL_COMMUNICATION_FAULT in alarms,
        "cell_imbalance": False,  # imbalance is a warning, never a protection
    }
    flags["general"] = any(flags.values())
    return flags


def _warnings(status: InverterStatus, protections: Mapping[str, bool], safe: bool) -> dict[str, bool]:
    """Warnings: every protection, plus the derating the limit engine applies before a BMS would trip.

    Each bit follows its own condition only: a temperature warning needs that end of the temperature
    curve to derate (the status says which), never a limit reason that some other cause produced.
    """
    limits, bank = status.limits, status.bank
    heat = status.temperature_derating
    mosfet = LimitReason.MOSFET in {limits.charge_reason, limits.discharge_reason}
    flags = {
        "high_voltage": protections["high_voltage"]
        or limits.charge_reason is LimitReason.CELL_VOLTAGE
        or limits.voltage_reason is LimitReason.CELL_VOLTAGE,
        "low_voltage": protections["low_voltage"] or limits.discharge_reason is LimitReason.CELL_VOLTAGE,
        "high_temperature": protections["high_temperature"] or (not safe and (heat.hot or mosfet)),
        "low_temperature": protections["low_temperature"] or (not safe and heat.cold),
        "high_temperature_charge": protections["high_temperature_charge"] or (not safe and heat.charge_hot),
        "low_temperature_charge": protections["low_temperature_charge"] or (not safe and heat.charge_cold),
        "discharge_high_current": protections["discharge_high_current"],
        "charge_high_current": protections["charge_high_current"],
        "short_circuit": protections["short_circuit"],
        "system_error": protections["system_error"],
        # A pack that dropped out is a communication problem inside the bank.
        "internal_communication": protections["internal_communication"] or (bank.degraded and not safe),
        "cell_imbalance": Alarm.CELL_IMBALANCE in bank.alarms and not safe,
    }
    flags["general"] = any(flags.values())
    return flags


def _round_up(value: float, step: float) -> float:
    return math.ceil(round(value / step, 6)) * step


def _last_voltage(status: InverterStatus) -> float | None:
    if status.bank.voltage is not None:
        return status.bank.voltage
    known = [s.voltage for s in status.bank.offline if s.voltage is not None]
    return math.fsum(known) / len(known) if known else None


def _cycles(bank: BankState) -> float | None:
    known = [s.cycles for s in bank.online if s.cycles is not None]
    return float(max(known)) if known else None


def _shown_bank(status: InverterStatus, phase: OutputPhase, invalid_markers: bool) -> BankState | None:
    """Where measurements come from: the bank now; in the safe phase the last fresh bank, or nothing.

    A profile with "invalid" markers says "unknown" for stale measurements; one without them would send
    0 °C or 0 mV cells as if measured, so it keeps the last fresh values instead (as Modbus does).
    """
    if phase is OutputPhase.NORMAL:
        return status.bank
    if invalid_markers:
        return None
    if status.last_fresh is not None:
        return status.last_fresh
    offline = status.bank.offline
    return aggregate([PackInput(s.battery_id, s, stale=False) for s in offline]) if offline else None


def _cell_values(bank: BankState | None, *, numbers: bool = True) -> dict[str, float | None]:
    # Per-cell frames carry one pack's cells: the first online pack's (the whole bank for one pack).
    # The cells are held measurements, always given; the extreme cells' numbers are not, so without
    # `numbers` (no frame reads them) they are not looked for.
    if bank is None:
        return {}
    pack = next((s for s in bank.online if s.cell_voltages), None)
    values: dict[str, float | None] = {}
    if pack is not None:
        values.update(zip(_CELL_VOLTAGE_SOURCES, pack.cell_voltages[:64], strict=False))
        values["cell_count"] = float(pack.cell_count)
    if not numbers:
        return values
    highest = _extreme_cell(bank.online, highest=True)
    lowest = _extreme_cell(bank.online, highest=False)
    values["cell_voltage_max_number"] = None if highest is None else float(highest)
    values["cell_voltage_min_number"] = None if lowest is None else float(lowest)
    return values


def _extreme_cell(packs: Sequence[BatterySnapshot], *, highest: bool) -> int | None:
    stats = [stat for s in packs if (stat := s.cell_max if highest else s.cell_min) is not None]
    if not stats:
        return None
    chosen = max(stats, key=lambda stat: stat.voltage) if highest else min(stats, key=lambda stat: stat.voltage)
    return chosen.cell


def _module_counts(bank: BankState, safe: bool) -> dict[str, float | None]:
    # Stale data proves no pack online: the safe phase reports every pack offline and none blocking.
    if safe:
        return {
            "modules_online": 0.0,
            "modules_offline": float(bank.pack_count),
            "modules_blocking_charge": 0.0,
            "modules_blocking_discharge": 0.0,
        }
    return {
        "modules_online": float(bank.packs_online),
        "modules_offline": float(bank.pack_count - bank.packs_online),
        "modules_blocking_charge": float(sum(s.charge_enabled is False for s in bank.online)),
        "modules_blocking_discharge": float(sum(s.discharge_enabled is False for s in bank.online)),
    }


def _extreme_ids(bank: BankState, safe: bool) -> dict[str, float | None]:
    """Characters of the ids holding the bank's extremes (first such pack/cell on a tie; none when stale)."""
    texts = dict.fromkeys(_ID_TEXTS, "")
    if not safe:
        position = {name: i for i, name in enumerate(bank.battery_ids, start=1)}
        # (value, pack, number): only the four winners' ids are spelled out.
        cells = [
            (stat.voltage, s.battery_id, stat.cell)
            for s in bank.online
            for stat in (s.cell_min, s.cell_max)
            if stat is not None
        ]
        sensors = [(value, s.battery_id, n) for s in bank.online for n, value in enumerate(s.temperatures, start=1)]
        if cells:
            _, pack, cell = min(cells, key=_VALUE)
            texts["min_voltage"] = f"P{position.get(pack, 0)}C{cell:02d}"
            _, pack, cell = max(cells, key=_VALUE)
            texts["max_voltage"] = f"P{position.get(pack, 0)}C{cell:02d}"
        if sensors:
            _, pack, sensor = min(sensors, key=_VALUE)
            texts["min_temperature"] = f"P{position.get(pack, 0)}T{sensor}"
            _, pack, sensor = max(sensors, key=_VALUE)
            texts["max_temperature"] = f"P{position.get(pack, 0)}T{sensor}"
    values: dict[str, float | None] = {}
    for name, text in texts.items():
        values.update(_id_chars(name, text))
    return values


_VALUE: Final = operator.itemgetter(0)
_ID_CHARS: dict[tuple[str, str], dict[str, float | None]] = {}


def _id_chars(name: str, text: str) -> dict[str, float | None]:
    """One id text's eight character sources; ids repeat from set to set, so each is built once."""
    chars = _ID_CHARS.get((name, text))
    if chars is None:
        chars = {
            source: float(ord(text[i])) if i < len(text) else None for i, source in enumerate(_ID_CHAR_SOURCES[name])
        }
        # Ids are bounded (pack × cell or sensor); the bound only guards against anything unforeseen.
        if len(_ID_CHARS) < 4096:
            _ID_CHARS[name, text] = chars
    return chars


def _protecting_pack(bank: BankState) -> float:
    # 1-based position of the first pack with an active protection in the bank; 0: none is protecting.
    protecting = {s.battery_id for s in bank.online if s.protection_active}
    return float(next((i for i, name in enumerate(bank.battery_ids, start=1) if name in protecting), 0))


def wire_values(
    profile: CanProfile, status: InverterStatus, phase: OutputPhase, requests: Requests
) -> dict[str, float | bool | None]:
    """Every source's value as the inverter will be told it, quirks applied.

    Args:
        profile: the inverter profile (its quirks matter here).
        status: bank and limits (in the safe phase the limit engine already holds both currents at 0).
        phase: normal or safe (other phases send nothing).
        requests: force-charge / full-charge request state.

    Returns:
        Values by source name; None where the bank does not know the value.
    """
    return _wire_values(profile, status, phase, requests, every_source=True)


def _wire_values(
    profile: CanProfile, status: InverterStatus, phase: OutputPhase, requests: Requests, *, every_source: bool
) -> dict[str, float | bool | None]:
    """:func:`wire_values`; without `every_source`, the costly sources no frame of the profile reads are left out.

    Only sources that are neither read nor held (see :func:`hold_missing`) may be left out: a held
    source must be remembered even under a profile that does not send it, for the profile swapped in next.
    """
    bank, limits, quirks = status.bank, status.limits, profile.quirks
    safe = phase is not OutputPhase.NORMAL
    # Belt and braces: in the safe phase nothing may allow current, whatever the engine said.
    charge_current = 0.0 if safe else limits.charge_current
    discharge_current = 0.0 if safe else limits.discharge_current
    charge_allowed = charge_current > 0.0
    discharge_allowed = discharge_current > 0.0

    cvl = limits.charge_voltage
    voltage = _last_voltage(status)
    if quirks.stop_charge_with_cvl and not charge_allowed and voltage is not None:
        # Victron/SMA keep charging on CVL alone: hold it at the pack voltage (rounded up so an SMA does
        # not start discharging into the grid to reach a CVL below the pack).
        floor = _round_up(voltage, profile.voltage_step)
        cvl = floor if cvl is None else min(cvl, floor)
    if quirks.never_zero_cvl and (cvl is None or cvl <= 0.0):
        cvl = voltage

    soc = bank.soc if not safe else _last_soc(status)
    if quirks.soc_forcing and soc is not None:
        # Deye/Solis ignore zero current limits but obey SoC: full stops charging, empty stops discharging.
        if not charge_allowed and discharge_allowed:
            soc = 100.0
        elif not discharge_allowed and charge_allowed:
            soc = 0.0

    shown = _shown_bank(status, phase, quirks.invalid_markers)
    protections = _protections(bank.alarms, safe)
    warnings = _warnings(status, protections, safe)
    values: dict[str, float | bool | None] = {
        "charge_voltage_limit": cvl,
        "charge_current_limit": charge_current,
        "discharge_current_limit": discharge_current,
        "discharge_voltage_limit": limits.min_voltage,
        "soc": soc,
        "soh": bank.soh if not safe else _last(status, "soh"),
        # A current measured before the data went stale is not a current now.
        "voltage": voltage,
        "current": None if safe else bank.current,
        "temperature": None if shown is None else shown.temperature_mean,
        "temperature_min": None if shown is None else shown.temperature_min,
        "temperature_max": None if shown is None else shown.temperature_max,
        "cell_voltage_min": None if shown is None else shown.cell_voltage_min,
        "cell_voltage_max": None if shown is None else shown.cell_voltage_max,
        "cell_delta": None if shown is None else shown.cell_delta,
        "remaining_capacity": None if shown is None else shown.remaining_capacity,
        "full_capacity": bank.full_capacity if not safe else _last_capacity(status),
        "cycles": None if shown is None else _cycles(shown),
        "pack_count": float(bank.pack_count),
        "packs_online": float(bank.packs_online),
        "protecting_pack": _protecting_pack(bank),
        "flow_state": _FLOW_STATE[status.direction],
        "charge_enable": charge_allowed,
        "discharge_enable": discharge_allowed,
        "force_charge_1": requests.force_charge_1 and charge_allowed,
        "force_charge_2": requests.force_charge_2 and charge_allowed,
        "full_charge_request": requests.full_charge and charge_allowed,
    }
    values.update(_cell_values(shown, numbers=every_source or profile.reads_cell_numbers))
    values.update(_module_counts(bank, safe))
    if every_source or profile.reads_extreme_ids:
        values.update(_extreme_ids(bank, safe))
    values.update(_manufacturer_chars(profile.manufacturer))
    values.update({_PROTECT_SOURCES[name]: flag for name, flag in protections.items()})
    values.update({_WARN_SOURCES[name]: flag for name, flag in warnings.items()})
    return values


_MANUFACTURER_CHARS: dict[str, dict[str, float]] = {}


def _manufacturer_chars(manufacturer: str) -> dict[str, float]:
    """The manufacturer text's character sources; it is a profile's constant, so built once per text."""
    chars = _MANUFACTURER_CHARS.get(manufacturer)
    if chars is None:
        chars = {f"manufacturer_{i}": float(ord(char)) for i, char in enumerate(manufacturer.ljust(8))}
        # Profiles are few; the bound only guards a process that swaps profiles for weeks.
        if len(_MANUFACTURER_CHARS) < 64:
            _MANUFACTURER_CHARS[manufacturer] = chars
    return chars


def _last(status: InverterStatus, attribute: Literal["soc", "soh"]) -> float | None:
    known = [v for s in status.bank.offline if (v := getattr(s, attribute)) is not None]
    return min(known) if known else None


def _last_soc(status: InverterStatus) -> float | None:
    # The lowest last-known SoC: with data missing, err towards "emptier" (stop discharging earlier).
    return _last(status, "soc")


def _last_capacity(status: InverterStatus) -> float | None:
    known = [c for s in status.bank.offline if (c := s.full_capacity or s.design_capacity) is not None]
    return math.fsum(known) if known else None


# -- compiled profile -------------------------------------------------------------------------------

_Encoder = Callable[[_Wire], int]


class _CompiledFrame:
    """One frame of a profile: its layout, and per signal the encoder of its raw value.

    `feeds` names every source the encoders read (each reads one source, or none for a constant), so
    the same feed values always give the same bytes: the last frame is reused while they repeat, which
    they mostly do (names, flags, limits and counts change rarely; a frame set goes out every second).
    The reuse relies on each source keeping its type from one set to the next (a flag source is always
    a bool, a number source a float or None): 1.0 and True compare equal but encode differently.
    """

    __slots__ = ("_last", "encoders", "feeds", "length", "message")

    def __init__(
        self, message: DbcMessage, length: int, encoders: tuple[tuple[str, _Encoder], ...], feeds: tuple[str, ...]
    ) -> None:
        self.message = message
        self.length = length
        self.encoders = encoders
        self.feeds = feeds
        self._last: tuple[tuple[float | bool | None, ...], CanFrame] | None = None

    def encode(self, values: _Wire) -> CanFrame:
        """The frame for these wire values (the previous frame object when its feed values repeat)."""
        key = tuple(map(values.get, self.feeds))
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        data = self.message.pack(tuple(encoder(values) for _name, encoder in self.encoders))
        frame = CanFrame(self.message.frame_id, data.ljust(self.length, b"\0"), self.message.is_extended)
        self._last = (key, frame)
        return frame


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CanProfile:
    """A compiled inverter profile.

    Attributes:
        name / description: as in the file.
        source: the YAML file it came from.
        dbc_source: the DBC file it uses.
        mode: ``push`` (frame set every `period`) or ``request`` (answer each `request_id` frame).
        period: s between frame sets (push) or the inverter's expected request period (request).
        min_interval: s at least between two frame sets (urgent sends never go faster).
        manufacturer: name in 0x35E (space padded to 8).
        keepalive_id: the inverter's liveness frame (push); None: liveness is not watched.
        request_id: the inverter's request frame (request mode; also its liveness).
        frame_ids: the frames of one set, in sending order.
        extra_frame_ids: frames sent after them while the ``victron_extras`` quirk is on.
        quirks: inverter-specific behaviour.
        voltage_step: V per raw step of the CVL signal (rounding for the CVL floor).
        capacity_limit: the largest capacity (Ah) the profile's capacity signals can carry.
        database: the DBC layouts (for decoding, e.g. by an inverter simulator).
    """

    name: str
    description: str
    source: str
    dbc_source: str
    mode: Literal["push", "request"]
    period: float
    min_interval: float
    manufacturer: str
    keepalive_id: int | None
    request_id: int | None
    frame_ids: tuple[int, ...]
    quirks: ProfileQuirks
    voltage_step: float
    database: DbcDatabase
    definition: CanProfileDefinition = dataclasses.field(repr=False, compare=False)
    capacity_limit: float | None = dataclasses.field(default=None, compare=False)
    """The largest Ah any capacity signal can carry (None: no capacity signal)."""
    _frames: tuple[_CompiledFrame, ...] = dataclasses.field(repr=False, compare=False)
    extra_frame_ids: tuple[int, ...] = ()
    _extra_frames: tuple[_CompiledFrame, ...] = dataclasses.field(default=(), repr=False, compare=False)
    reads_extreme_ids: bool = dataclasses.field(default=True, compare=False)
    """Whether a frame (extra frames included) reads an extreme's id characters (else they are not computed)."""
    reads_cell_numbers: bool = dataclasses.field(default=True, compare=False)
    """Whether a frame reads the highest / lowest cell's number (else they are not computed)."""

    @property
    def liveness_id(self) -> int | None:
        """The frame id whose arrival proves the inverter is alive."""
        return self.request_id if self.mode == "request" else self.keepalive_id

    def with_overrides(
        self, *, quirks: Mapping[str, bool] | None = None, manufacturer: str | None = None, period: float | None = None
    ) -> CanProfile:
        """A copy with settings from the configuration applied."""
        new_quirks = self.quirks.model_copy(update=dict(quirks or {}))
        name = self.manufacturer if manufacturer is None else manufacturer
        if not name.isascii() or len(name) > 8:
            raise ValueError("manufacturer must be at most 8 ASCII characters")
        return dataclasses.replace(
            self,
            quirks=new_quirks,
            manufacturer=name.ljust(8),
            period=self.period if period is None else period,
        )

    def encode(self, values: _Wire) -> list[CanFrame]:
        """The frame set for already computed wire values (the extra frames too while their quirk is on)."""
        frames = self._frames + self._extra_frames if self.quirks.victron_extras else self._frames
        return [frame.encode(values) for frame in frames]


_HELD_SOURCES: Final = frozenset(
    {
        "soh",
        "temperature",
        "temperature_min",
        "temperature_max",
        "cell_voltage_min",
        "cell_voltage_max",
        "cell_delta",
        "remaining_capacity",
        "cycles",
    }
)
"""Measurements a profile without "invalid" markers keeps at their last known value when a poll lacks them."""


class HeldMeasurements:
    """An output's memory of the last known measurements (see :func:`hold_missing`).

    A value is held for at most `limit` frame sets in a row (a minute at a 1 s period): a sensor that
    died must not keep reporting an old, cool temperature for hours.
    """

    def __init__(self, limit: int = 60) -> None:
        self.limit = limit
        self.values: dict[str, float] = {}
        self.misses: dict[str, int] = {}


_HELD_NAMES: Final = _HELD_SOURCES | frozenset(_CELL_VOLTAGE_SOURCES)
"""Every source :func:`hold_missing` holds: the measurements above and the cell voltages (cells 1-64)."""


def hold_missing(values: dict[str, float | bool | None], held: HeldMeasurements) -> None:
    """Fill measurements the bank does not report now with their last known value; remember the new ones.

    Without an "invalid" marker a missing value would go out as raw 0: 0 °C, 0 mV cells, 0 % SoH, which
    the inverter takes as measured (and may act on). A value never reported at all, or missing for longer
    than the hold, still has no better spelling than 0; docs/can.md says so per profile.
    """
    count = values.get("cell_count")
    if isinstance(count, float | int) and held.values.get("cell_count") != count:
        # Another pack (or layout) now carries the per-cell frames: the old pack's cells are not its cells.
        for source in [s for s in held.values if s.startswith("cell_voltage_") and s[13:].isdigit()]:
            del held.values[source]
        held.values["cell_count"] = float(count)
    # Only the held names are visited (a set intersection in C): each is independent of the others, so
    # their order does not matter, and the other hundred sources of a frame set are not looked at.
    known, missed = held.values, held.misses
    for source in values.keys() & _HELD_NAMES:
        value = values[source]
        if value is None:
            misses = missed.get(source, 0) + 1
            missed[source] = misses
            if source in known and misses <= held.limit:
                values[source] = known[source]
        elif not isinstance(value, bool):
            known[source] = value
            if missed:  # mostly empty: nothing to forget
                missed.pop(source, None)


def build_frames(
    profile: CanProfile,
    status: InverterStatus,
    phase: OutputPhase,
    requests: Requests = _NO_REQUESTS,
    *,
    held: HeldMeasurements | None = None,
) -> list[CanFrame]:
    """The frame set to send now (empty when the phase is silent or waiting).

    Args:
        profile: the inverter profile.
        status: the bank and its limits.
        phase: from the stale-data state machine.
        requests: force/full charge requests.
        held: the output's memory of last known measurements (see :func:`hold_missing`); profiles with
            "invalid" markers send those instead and ignore it.
    """
    if not phase.transmits:
        return []
    values = _wire_values(profile, status, phase, requests, every_source=False)
    if held is not None and not profile.quirks.invalid_markers:
        hold_missing(values, held)
    _fit_capacity(values, profile.capacity_limit)
    return profile.encode(values)


_CAPACITY_SOURCES: Final = frozenset({"remaining_capacity", "full_capacity"})


def _fit_capacity(values: dict[str, float | bool | None], limit: float | None) -> None:
    """Scale remaining and full capacity together when the bank is larger than the signals can carry.

    Clamping each alone would make a big bank look full (remaining = full = the signal's maximum); scaling
    both keeps the state of charge the inverter derives from them true.
    """
    full, remaining = values.get("full_capacity"), values.get("remaining_capacity")
    largest = max((v for v in (full, remaining) if isinstance(v, float | int) and not isinstance(v, bool)), default=0.0)
    if limit is None or limit <= 0 or largest <= limit:
        return
    factor = limit / largest
    for source in _CAPACITY_SOURCES:
        value = values.get(source)
        if isinstance(value, float | int) and not isinstance(value, bool):
            values[source] = value * factor


# -- compilation ------------------------------------------------------------------------------------


def _raw_invalid(signal: DbcSignal) -> int:
    return signal.raw_min if signal.signed else signal.raw_max


def _number_encoder(signal: DbcSignal, source: str, invalid_markers: bool) -> _Encoder:
    missing = _raw_invalid(signal) if invalid_markers else 0
    low, high = signal.raw_min, signal.raw_max
    if signal.minimum is not None:
        low = max(low, math.ceil(round((signal.minimum - signal.offset) / signal.scale, 6)))
    if signal.maximum is not None:
        high = min(high, math.floor(round((signal.maximum - signal.offset) / signal.scale, 6)))
    scale, offset = signal.scale, signal.offset

    def encode(values: _Wire) -> int:
        value = values.get(source)
        if value is None or isinstance(value, bool) or not math.isfinite(value):
            return missing
        # Half away from zero after removing binary noise: 52.8 / 0.01 must give 5280.
        scaled = round((value - offset) / scale, 6)
        raw = int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))
        return min(max(raw, low), high)

    return encode


def _flag_encoder(signal: DbcSignal, source: str) -> _Encoder:
    if signal.length == 1:
        return lambda values: 1 if values.get(source) else 0
    # SMA pairs: the first (low) bit says "raised", the second "cleared"; 00 and 11 mean "ignored".
    return lambda values: 0b01 if values.get(source) else 0b10


def _constant(raw: int) -> _Encoder:
    return lambda _values: raw


def _text_encoder(feed: str) -> _Encoder:
    def encode(values: _Wire) -> int:
        code = values.get(feed)
        return int(code) if isinstance(code, int | float) and not isinstance(code, bool) else 0

    return encode


def _manufacturer_encoder(feed: str) -> _Encoder:
    def encode(values: _Wire) -> int:
        code = values.get(feed)
        return int(code) if isinstance(code, int | float) else 0x20

    return encode


def _compile_signal(signal: DbcSignal, spec: CanProfileDefinition, field: str, source: str) -> _Encoder:
    def fail(reason: str) -> DefinitionError:
        return DefinitionError(reason, source=source, field=field)

    if signal.name in spec.invalid:
        return _constant(_raw_invalid(signal))
    if signal.name in spec.constants:
        raw = spec.constants[signal.name]
        if not signal.raw_min <= raw <= signal.raw_max:
            raise fail(f"constant {raw} does not fit {signal.length} bits")
        return _constant(raw)
    feed = spec.signals.get(signal.name, signal.name)
    match = _MANUFACTURER_SIGNAL.fullmatch(feed)
    if match:
        if signal.length != 8:
            raise fail("a manufacturer character needs an 8-bit signal")
        return _manufacturer_encoder(feed)
    if _ID_SOURCE.fullmatch(feed):
        if signal.length != 8:
            raise fail("an id character needs an 8-bit signal")
        return _text_encoder(feed)
    if feed in FLAG_SOURCES:
        if signal.length not in {1, 2}:
            raise fail(f"flag source {feed!r} needs a 1-bit or 2-bit signal, not {signal.length} bits")
        return _flag_encoder(signal, feed)
    if feed in NUMBER_SOURCES or _CELL_VOLTAGE_SOURCE.fullmatch(feed):
        min_bits = _MIN_BITS.get(feed, 8)
        if signal.length < min_bits:
            raise fail(f"number source {feed!r} needs at least {min_bits} bits")
        if signal.scale == 0:
            raise fail("scale must not be 0")
        return _number_encoder(signal, feed, spec.quirks.invalid_markers)
    known = ", ".join(sorted(NUMBER_SOURCES | FLAG_SOURCES | {"cell_voltage_1..cell_voltage_64"}))
    raise fail(
        f"no source for signal {signal.name!r} (map it under 'signals', give a constant, or list it as invalid); "
        f"known sources: {known}, manufacturer_0..manufacturer_7, "
        f"{{min,max}}_{{voltage,temperature}}_id_0..7"
    )


def _compile(spec: CanProfileDefinition, database: DbcDatabase, source: str) -> CanProfile:
    for key in spec.signals:
        if not any(key in {s.name for s in m.signals} for m in database.messages.values()):
            raise DefinitionError(f"the DBC file has no signal {key!r}", source=source, field=f"signals.{key}")
    if spec.mode == "request" and spec.request_id is None:
        raise DefinitionError("mode request needs request_id", source=source, field="request_id")
    every = [*spec.frames, *spec.extra_frames]
    if len(set(every)) != len(every):
        raise DefinitionError(
            "a frame is listed twice",
            source=source,
            field="frames" if len(set(spec.frames)) < len(spec.frames) else "extra_frames",
        )
    frames = []
    voltage_step = 0.1
    capacity_limit: float | None = None
    listed = [(f"frames[{i}]", f) for i, f in enumerate(spec.frames)]
    listed += [(f"extra_frames[{i}]", f) for i, f in enumerate(spec.extra_frames)]
    for field, frame_id in listed:
        try:
            message = database.message(frame_id)
        except KeyError:
            raise DefinitionError(
                f"frame 0x{frame_id:X} is not defined in {database.source}", source=source, field=field
            ) from None
        length = message.length if spec.dlc is None else spec.dlc
        if length < message.length:
            raise DefinitionError(
                f"dlc {spec.dlc} is shorter than {message.name}'s {message.length} bytes", source=source, field="dlc"
            )
        encoders = tuple(
            (signal.name, _compile_signal(signal, spec, f"{field}.{message.name}.{signal.name}", source))
            for signal in message.signals
        )
        # What the encoders read: constants and "invalid" markers read nothing.
        feeds = tuple(
            dict.fromkeys(
                spec.signals.get(signal.name, signal.name)
                for signal in message.signals
                if signal.name not in spec.invalid and signal.name not in spec.constants
            )
        )
        for signal in message.signals:
            feed = spec.signals.get(signal.name, signal.name)
            if feed == "charge_voltage_limit":
                voltage_step = abs(signal.scale)
            if feed in _CAPACITY_SOURCES and signal.name not in spec.invalid and signal.name not in spec.constants:
                largest = signal.raw_max * signal.scale + signal.offset
                if signal.maximum is not None:
                    largest = min(largest, signal.maximum)
                capacity_limit = largest if capacity_limit is None else min(capacity_limit, largest)
        frames.append(_CompiledFrame(message, length, encoders, feeds))
    read = frozenset(feed for frame in frames for feed in frame.feeds)
    return CanProfile(
        name=spec.name,
        description=spec.description,
        source=source,
        dbc_source=database.source,
        mode=spec.mode,
        period=spec.period,
        min_interval=spec.min_interval,
        manufacturer=spec.manufacturer.ljust(8),
        keepalive_id=spec.keepalive_id,
        request_id=spec.request_id,
        frame_ids=tuple(spec.frames),
        extra_frame_ids=tuple(spec.extra_frames),
        quirks=spec.quirks,
        voltage_step=voltage_step,
        database=database,
        definition=spec,
        _frames=tuple(frames[: len(spec.frames)]),
        _extra_frames=tuple(frames[len(spec.frames) :]),
        capacity_limit=capacity_limit,
        reads_extreme_ids=any(_ID_SOURCE.fullmatch(feed) for feed in read),
        reads_cell_numbers=not read.isdisjoint(_CELL_NUMBER_SOURCES),
    )


def compile_profile(spec: CanProfileDefinition, *, source: str = "<profile>") -> CanProfile:
    """Compile a validated profile: parse its DBC text and check every frame and signal against it.

    Raises:
        DefinitionError: the DBC is invalid, or the profile names frames/signals it lacks (names file, entry).
    """
    dbc_source = f"{source}: dbc {spec.dbc}"
    return _compile(spec, load_dbc_text(spec.dbc_text, source=dbc_source), source)


def load_profile(name_or_path: str | Path) -> CanProfile:
    """A profile from the catalog: a name (``pylon``) along the search path, or a profile YAML file's path.

    Raises:
        DefinitionError: the profile or its DBC file is missing or invalid (names file, entry, reason).
    """
    from bmsgate.catalog import default_catalog  # noqa: PLC0415 - the catalog imports this module

    return default_catalog().can_profile(name_or_path)


def decode_frames(profile: CanProfile, frames: Sequence[CanFrame]) -> dict[int, dict[str, float]]:
    """Physical values by frame id (what an inverter would read; for tests and diagnostics)."""
    decoded = {}
    for frame in frames:
        message = profile.database.messages.get(frame.arbitration_id)
        if message is not None:
            decoded[frame.arbitration_id] = message.decode(frame.data[: message.length])
    return decoded

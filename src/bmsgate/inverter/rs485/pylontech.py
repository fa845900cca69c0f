"""The battery side of Pylontech LV RS485: replies built from one :class:`InverterStatus` (pure).

Every layout, scale and bit is the facts file's (../shared/inverter/rs485-and-more.md §1.6-1.8): the
module family of V2.8/V3.3 (0x4F, 0x51, 0x42, 0x44, 0x92, 0x93, 0x96) and the V3.5 system family
(0x61, 0x62, 0x63). Where the facts could not settle a detail the conservative reading is the default
and a :class:`Rs485Dialect` field makes it an option (the 0x63 current unit, the sign of the 0x92
discharge limit, the 0x4F version).

The whole bank is presented as **one module** at the dialect's address: its totals (current,
capacity) are the bank's, its cells and sensors the first online pack's (as the CAN profiles do); the
inverter takes the limits from 0x92 / 0x63, which are the bank's. What is not answered, and why:

* 0x47 (system parameters), 0x60 (system basic info): no inverter in the facts polls them; 0x60's
  version field width differs between implementations, and 0x47's temperature thresholds are not one
  number in bmsgate. Answered RTN 04 (CID2 invalid), as for any unknown command.
* 0x94 (set limits), 0x95 (turn off): bmsgate's limits come from its own engine only; an inverter may
  not raise them. RTN 04.

A malformed frame is never answered (its address may be garbled, and on a shared bus an answer to
someone else's request collides with the real battery); see frame.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from bmsgate.inverter import alarm_groups as groups
from bmsgate.inverter.bank import BankState
from bmsgate.inverter.phases import OutputPhase, Requests
from bmsgate.inverter.rs485.frame import PylonFrame
from bmsgate.inverter.status import InverterStatus
from bmsgate.model import Alarm, BatterySnapshot

__all__ = [
    "BATTERY",
    "DIALECTS",
    "RTN",
    "BatteryIdentity",
    "Rs485Dialect",
    "answer",
    "reply_info",
]

BATTERY: Final = 0x46
"""CID1 of battery data."""


class RTN:
    """Return codes in a reply's CID2 (vendor list)."""

    NORMAL: Final = 0x00
    VER_ERROR: Final = 0x01
    CHKSUM_ERROR: Final = 0x02
    LCHKSUM_ERROR: Final = 0x03
    CID2_INVALID: Final = 0x04
    COMMAND_FORMAT: Final = 0x05
    INVALID_DATA: Final = 0x06
    ADR_ERROR: Final = 0x90


_MODULE_COMMANDS: Final = frozenset({0x42, 0x44, 0x92, 0x93, 0x96})
"""Commands whose INFO is a one-byte command value that must equal ADR (0xFF: the whole system, 0x42/0x44)."""
_SYSTEM_WIDE: Final = frozenset({0x42, 0x44})

_KELVIN_OFFSET: Final = 2731
"""Temperatures are 0.1 K with this offset (25.5 °C → 2986)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rs485Dialect:
    """How one inverter family polls, and the details the facts leave open.

    Attributes:
        name / description: as listed by ``bmsgate inverters list``.
        inverters: models the facts file reports on this dialect.
        battery_type: what to select on the inverter.
        verified: how the dialect is known: ``device-confirmed`` (an implementation reported working
            on that inverter), ``real frames`` (checked against captured frames), ``impl``.
        polls: the commands this inverter family polls (the simulated inverter sends these).
        addresses: ADRs answered; None: every address (SRNE polls several and wants one battery).
        reply_address: ADR put in replies; None: the request's.
        protocol_version: VER of the 0x4F reply (the inverter may adopt it for later requests).
        discharge_limit_negative: 0x92 DCL sent negative as real Pylontech packs do; False: positive.
        system_current_scale: A per raw step of the 0x63 current limits (0.1 or 0.01; unsettled).
        silent_after: s since the newest data after which replies stop (the inverter's own fallback).
        on_lost: what the inverter does when replies stop (facts §4), for the docs and the listing.
    """

    name: str
    description: str
    inverters: tuple[str, ...]
    battery_type: str
    verified: str
    polls: tuple[int, ...]
    addresses: tuple[int, ...] | None = (0x02,)
    reply_address: int | None = None
    protocol_version: int = 0x20
    discharge_limit_negative: bool = True
    system_current_scale: float = 0.1
    silent_after: float = 120.0
    on_lost: str = "not stated in any source found"

    def with_overrides(self, **changes: object) -> Rs485Dialect:
        """A copy with the configuration's explicit settings (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


DIALECTS: Final[Mapping[str, Rs485Dialect]] = {
    dialect.name: dialect
    for dialect in (
        Rs485Dialect(
            name="voltronic",
            description="Voltronic/Axpert family, battery type PYL (polls 0x4F, 0x42, 0x92; never 0x44)",
            inverters=("Voltronic PIP5048GK / Axpert VM III", "Axpert MAX 7.2 kW", "Mecer, RCT, Kodak, MPP Solar"),
            battery_type="PYL (program 05 = PYL)",
            verified="device-confirmed (diyBMS on PIP5048GK, Axpert MAX 7.2 kW)",
            polls=(0x4F, 0x42, 0x92),
            # diyBMS answers 0x4F with VER 28 and the inverter then keeps asking with VER 28.
            protocol_version=0x28,
            # Voltronic accepts a positive 0x92 DCL (diyBMS, device-confirmed).
            discharge_limit_negative=False,
            on_lost="warning/error 61 (battery communication lost); one report of a shutdown ~10 min later",
        ),
        Rs485Dialect(
            name="srne",
            description="SRNE family (also EcoWorthy AIO), battery type PYL (polls 0x61, 0x62, 0x63)",
            inverters=("SRNE HF/ASP hybrid", "EcoWorthy AIO"),
            battery_type="PYL",
            verified="device-confirmed (Fahmula esphome-pylontech-rs485 on SRNE/EcoWorthy)",
            polls=(0x61, 0x62, 0x63),
            # It polls several addresses and expects every reply from ADR 02 (Fahmula README).
            addresses=None,
            reply_address=0x02,
            on_lost="not stated; Fahmula's responder stops answering after 60 s of stale data",
            silent_after=60.0,
        ),
        Rs485Dialect(
            name="easun-smx2",
            description="EASUN SMX II, battery type PYL: SRNE-style polls at ADR 0x12",
            inverters=("EASUN SMX II",),
            battery_type="PYL",
            verified="impl (polls from a capture; replies not captured)",
            polls=(0x61, 0x62, 0x63),
            addresses=(0x12,),
            reply_address=0x02,
            on_lost="error 58 (BMS not connected) while requests go unanswered",
            silent_after=60.0,
        ),
        Rs485Dialect(
            name="pylontech",
            description="Generic Pylontech US/UP reader: the whole module family plus 0x61-0x63, ADR 02",
            inverters=("Pylontech monitoring tools", "other PYL-mode inverters"),
            battery_type="PYL / Pylontech",
            verified="real frames (US2000/US3000/UP2500 captures)",
            polls=(0x4F, 0x51, 0x42, 0x44, 0x92, 0x93, 0x96, 0x61, 0x62, 0x63),
        ),
    )
}
"""The built-in RS485 dialects by name."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BatteryIdentity:
    """What 0x51, 0x93 and 0x96 report (ASCII; cut and space-padded to the field widths)."""

    battery_name: str = "BMSGATE"
    manufacturer: str = "bmsgate"
    serial_number: str = "BMSGATE-0000001"
    software_version: tuple[int, int] = (1, 0)
    mainline_version: tuple[int, int, int] = (1, 0, 0)


# -- helpers ----------------------------------------------------------------------------------------


def _u8(value: float | int) -> bytes:
    return min(max(int(value), 0), 0xFF).to_bytes(1, "big")


def _u16(value: float | int) -> bytes:
    return min(max(int(value), 0), 0xFFFF).to_bytes(2, "big")


def _s16(value: float | int) -> bytes:
    return min(max(int(value), -0x8000), 0x7FFF).to_bytes(2, "big", signed=True)


def _u24(value: float | int) -> bytes:
    return min(max(int(value), 0), 0xFFFFFF).to_bytes(3, "big")


def _ascii(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def _mv(volts: float | None) -> int:
    return 0 if volts is None else round(volts * 1000)


def _temperature(celsius: float | None) -> bytes:
    # Unknown reads as 0 °C: an inverter that derates does so towards less current, never more.
    return _s16(_KELVIN_OFFSET + (0 if celsius is None else round(celsius * 10)))


def _toward_zero(amps: float, step: float) -> int:
    """Raw steps of a current limit, never rounded up (a limit must not grow by rounding)."""
    return math.floor(round(amps / step, 6)) if amps > 0 else 0


def _bits(*flags: tuple[int, bool]) -> int:
    return sum(1 << bit for bit, on in flags if on)


# -- what the replies say ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _View:
    """The status as the inverter is told it in this phase (limits zero and enables clear when safe)."""

    safe: bool
    bank: BankState | None
    """Where measurements come from: the bank now, or in the safe phase the last fresh bank."""
    alarms: frozenset[Alarm]
    charge_voltage: float | None
    discharge_voltage: float | None
    charge_current: float
    discharge_current: float
    soc: float | None
    requests: Requests
    hot: bool
    cold: bool
    degraded: bool

    @property
    def charge_allowed(self) -> bool:
        return self.charge_current > 0.0

    @property
    def discharge_allowed(self) -> bool:
        return self.discharge_current > 0.0


def _view(status: InverterStatus, phase: OutputPhase, requests: Requests) -> _View:
    safe = phase is not OutputPhase.NORMAL
    bank, limits = status.bank, status.limits
    shown = bank if not safe else (status.last_fresh or None)
    voltage = bank.voltage if bank.voltage is not None else (shown.voltage if shown is not None else None)
    charge_voltage = limits.charge_voltage if limits.charge_voltage is not None else voltage
    # No configured floor known: the pack voltage itself, which leaves no room to discharge further.
    discharge_voltage = limits.min_voltage if limits.min_voltage is not None else voltage
    soc = bank.soc
    if safe:
        known = [s.soc for s in bank.offline if s.soc is not None]
        # With data missing, err towards "emptier" (stop discharging earlier), as the CAN output does.
        soc = min(known) if known else (shown.soc if shown is not None else None)
    heat = status.temperature_derating
    return _View(
        safe=safe,
        bank=shown,
        # Stale, the bank is blind: a protection active when the data stopped stays reported.
        alarms=bank.alarms | (status.last_fresh.alarms if safe and status.last_fresh is not None else frozenset()),
        charge_voltage=charge_voltage,
        discharge_voltage=discharge_voltage,
        # Belt and braces: in the safe phase nothing may allow current, whatever the engine said.
        charge_current=0.0 if safe else limits.charge_current,
        discharge_current=0.0 if safe else limits.discharge_current,
        soc=soc,
        requests=requests,
        hot=heat.hot and not safe,
        cold=heat.cold and not safe,
        degraded=bank.degraded and not safe,
    )


def _first_pack(bank: BankState | None) -> BatterySnapshot | None:
    if bank is None:
        return None
    return next((s for s in bank.online if s.cell_voltages), bank.online[0] if bank.online else None)


def _cycles(bank: BankState | None) -> list[int]:
    return [] if bank is None else [s.cycles for s in bank.online if s.cycles is not None]


def _module_block(view: _View) -> bytes:
    """0x42 after INFOFLAG and the command value: cells, temperatures, current, voltage, capacities, cycles."""
    bank, pack = view.bank, _first_pack(view.bank)
    cells = pack.cell_voltages[:255] if pack is not None else ()
    out = bytearray(_u8(len(cells)))
    for cell in cells:
        out += _u16(_mv(cell))
    board = None
    if pack is not None:
        board = pack.mosfet_temperature if pack.mosfet_temperature is not None else pack.temperature_mean
    sensors = [board, *(pack.temperatures[:4] if pack is not None else ())] if pack is not None else []
    out += _u8(len(sensors))
    for sensor in sensors:
        out += _temperature(sensor)
    # A current measured before the data went stale is not a current now.
    current = None if view.safe or bank is None else bank.current
    out += _s16(0 if current is None else round(current * 10))
    out += _u16(_mv(None if bank is None else bank.voltage))
    remaining_ah = None if bank is None else bank.remaining_capacity
    if view.safe and bank is not None and bank.full_capacity is not None and view.soc is not None:
        # The inverter derives SoC from these fields: stale, they must say what the safe SoC says (the
        # lowest last known), not the plausible capacity of the last fresh bank.
        remaining_ah = min(
            remaining_ah if remaining_ah is not None else bank.full_capacity, bank.full_capacity * view.soc / 100
        )
    remaining = 0 if remaining_ah is None else round(remaining_ah * 1000)
    total = 0 if bank is None or bank.full_capacity is None else round(bank.full_capacity * 1000)
    cycles = max(_cycles(bank), default=0)
    if total > 0xFFFF or remaining > 0xFFFF:
        # Above 65 Ah the user-defined count is 4: capacity-1 fields FFFF, 24-bit capacity-2 fields after cycles.
        out += b"\xff\xff" + _u8(4) + b"\xff\xff" + _u16(cycles) + _u24(remaining) + _u24(total)
    else:
        out += _u16(remaining) + _u8(2) + _u16(total) + _u16(cycles)
    return bytes(out)


def _state(low: bool, high: bool) -> int:
    return 0x02 if high else 0x01 if low else 0x00


def _alarm_block(view: _View) -> bytes:
    """0x44 after DATAFLAG and the command value: per-cell, per-sensor and module states, Status1-5."""
    alarms, pack = view.alarms, _first_pack(view.bank)
    cells = pack.cell_voltages[:255] if pack is not None else ()
    lowest = pack.cell_min.cell if pack is not None and pack.cell_min is not None else None
    highest = pack.cell_max.cell if pack is not None and pack.cell_max is not None else None
    out = bytearray(_u8(len(cells)))
    for number in range(1, len(cells) + 1):
        # The bank says a cell is out of range, not which: the extreme cell carries it.
        out += _u8(
            _state(
                low=number == lowest and Alarm.CELL_UNDERVOLTAGE in alarms,
                high=number == highest and Alarm.CELL_OVERVOLTAGE in alarms,
            )
        )
    sensors = 1 + len(pack.temperatures[:4]) if pack is not None else 0
    out += _u8(sensors)
    for _ in range(sensors):
        out += _u8(
            _state(
                low=groups.any_of(alarms, groups.LOW_TEMPERATURE), high=groups.any_of(alarms, groups.HIGH_TEMPERATURE)
            )
        )
    out += _u8(_state(low=False, high=groups.any_of(alarms, groups.CHARGE_CURRENT)))
    out += _u8(_state(low=Alarm.PACK_UNDERVOLTAGE in alarms, high=Alarm.PACK_OVERVOLTAGE in alarms))
    out += _u8(_state(low=False, high=groups.any_of(alarms, groups.DISCHARGE_CURRENT)))
    status1 = _bits(
        (7, Alarm.PACK_UNDERVOLTAGE in alarms),
        (6, Alarm.CHARGE_OVERTEMPERATURE in alarms),
        (5, Alarm.DISCHARGE_OVERTEMPERATURE in alarms),
        (4, groups.any_of(alarms, groups.DISCHARGE_CURRENT)),
        (2, groups.any_of(alarms, groups.CHARGE_CURRENT)),
        (1, Alarm.CELL_UNDERVOLTAGE in alarms),
        (0, Alarm.PACK_OVERVOLTAGE in alarms),
    )
    bank = view.bank
    current = None if view.safe or bank is None else bank.current
    # Stale FET states are not claimed: "on" only while the data is fresh and the bank says so. The
    # real capture (facts §5 C) sets b3 "using battery power" while charging: it means the pack runs,
    # not that it discharges, so it follows fresh data.
    status2 = _bits(
        (3, not view.safe and bank is not None),
        (2, not view.safe and bank is not None and bank.discharge_enabled is True),
        (1, not view.safe and bank is not None and bank.charge_enabled is True),
    )
    heating = pack is not None and pack.heating is True and not view.safe
    status3 = _bits(
        (7, current is not None and current > 0.1),
        (6, current is not None and current < -0.1),
        (5, heating),
        (3, Alarm.BATTERY_FULL in alarms and not view.safe),
    )
    faults = [not 1.0 <= cell <= 4.2 for cell in cells[:16]]
    status4 = _bits(*((i, fault) for i, fault in enumerate(faults[:8])))
    status5 = _bits(*((i, fault) for i, fault in enumerate(faults[8:16])))
    out += bytes((status1, status2, status3, status4, status5))
    # Real packs send one undocumented byte after Status5 (00 in every capture); readers built against
    # them may count on it, readers built from the document parse by position and ignore it.
    out += b"\x00"
    return bytes(out)


def _management(view: _View, *, step: float, negative_dcl: bool) -> bytes:
    """CVL, DVL, CCL, DCL and the enable/request byte shared by 0x92 and 0x63."""
    # CVL rounded down and DVL rounded up: rounding never widens the window.
    cvl = math.floor(round((view.charge_voltage or 0.0) * 1000, 6))
    dvl = math.ceil(round((view.discharge_voltage or 0.0) * 1000, 6))
    ccl = _toward_zero(view.charge_current, step)
    dcl = _toward_zero(view.discharge_current, step)
    charge, discharge = view.charge_allowed, view.discharge_allowed
    status = _bits(
        (7, charge),
        (6, discharge),
        (5, view.requests.force_charge_1 and charge),
        (4, view.requests.force_charge_2 and charge),
        (3, view.requests.full_charge and charge),
    )
    return _u16(cvl) + _u16(dvl) + _s16(ccl) + _s16(-dcl if negative_dcl else dcl) + _u8(status)


def _system_status(view: _View) -> int:
    charge, discharge = view.charge_allowed, view.discharge_allowed
    # 0x63 has one "charge immediately" bit (b5) and the full-charge request in b4 (facts §1.7).
    return _bits(
        (7, charge),
        (6, discharge),
        (5, (view.requests.force_charge_1 or view.requests.force_charge_2) and charge),
        (4, view.requests.full_charge and charge),
    )


def _extreme(
    packs: Sequence[BatterySnapshot], ids: Sequence[str], values: Callable[[BatterySnapshot], Sequence[float]]
) -> tuple[float | None, int, float | None, int, float | None]:
    """(max, its position, min, its position, mean) over every pack; position = module << 8 | index."""
    found: list[tuple[float, int]] = []
    for snapshot in packs:
        module = ids.index(snapshot.battery_id) + 1 if snapshot.battery_id in ids else 1
        found += [(value, (module << 8) | n) for n, value in enumerate(values(snapshot), start=1)]
    if not found:
        return None, 0, None, 0, None
    high = max(found, key=lambda item: item[0])
    low = min(found, key=lambda item: item[0])
    return high[0], high[1], low[0], low[1], math.fsum(v for v, _ in found) / len(found)


def _system_analog(view: _View) -> bytes:
    """0x61: 49 bytes of totals, SoC/SoH/cycles and the extreme cells and sensors with their positions."""
    bank = view.bank
    packs = bank.online if bank is not None else ()
    ids = bank.battery_ids if bank is not None else ()
    current = None if view.safe or bank is None else bank.current
    cycles = _cycles(bank)
    sohs = [s.soh for s in packs if s.soh is not None]
    out = bytearray()
    out += _u16(_mv(None if bank is None else bank.voltage))
    out += _s16(0 if current is None else round(current * 100))
    out += _u8(0 if view.soc is None else round(view.soc))
    out += _u16(round(math.fsum(cycles) / len(cycles)) if cycles else 0) + _u16(max(cycles, default=0))
    out += _u8(round(bank.soh) if bank is not None and bank.soh is not None else 0)
    out += _u8(round(min(sohs)) if sohs else 0)
    high, high_at, low, low_at, _ = _extreme(packs, ids, lambda s: s.cell_voltages)
    out += _u16(_mv(high)) + _u16(high_at) + _u16(_mv(low)) + _u16(low_at)
    for values in (lambda s: s.temperatures, lambda s: () if s.mosfet_temperature is None else (s.mosfet_temperature,)):
        high, high_at, low, low_at, mean = _extreme(packs, ids, values)
        out += _temperature(mean) + _temperature(high) + _u16(high_at) + _temperature(low) + _u16(low_at)
    # The BMS board sensor: bmsgate knows the power stage (MOSFET) temperature, the board's closest kin.
    out += out[-10:]
    return bytes(out)


def _system_alarm(view: _View) -> bytes:
    """0x62: alarm1, alarm2, protection1, protection2 (bits per facts §1.7)."""
    alarms, safe = view.alarms, view.safe
    high_t = groups.any_of(alarms, groups.BATTERY_HIGH_TEMPERATURE)
    low_t = groups.any_of(alarms, groups.LOW_TEMPERATURE)
    alarm1 = _bits(
        (7, Alarm.PACK_OVERVOLTAGE in alarms),
        (6, Alarm.PACK_UNDERVOLTAGE in alarms),
        (5, Alarm.CELL_OVERVOLTAGE in alarms),
        (4, Alarm.CELL_UNDERVOLTAGE in alarms),
        (3, high_t or view.hot),
        (2, low_t or view.cold),
        (1, Alarm.MOSFET_OVERTEMPERATURE in alarms),
        (0, Alarm.CELL_IMBALANCE in alarms and not safe),
    )
    alarm2 = _bits(
        (6, groups.any_of(alarms, groups.CHARGE_CURRENT)),
        (5, groups.any_of(alarms, groups.DISCHARGE_CURRENT)),
        # Stale data, or a pack that dropped out of the bank, is a communication problem inside the battery.
        (4, safe or view.degraded or Alarm.INTERNAL_COMMUNICATION_FAULT in alarms),
    )
    protection1 = _bits(
        (7, Alarm.PACK_OVERVOLTAGE in alarms),
        (6, Alarm.PACK_UNDERVOLTAGE in alarms),
        (5, Alarm.CELL_OVERVOLTAGE in alarms),
        (4, Alarm.CELL_UNDERVOLTAGE in alarms),
        (3, high_t),
        (2, low_t),
        (1, Alarm.MOSFET_OVERTEMPERATURE in alarms),
    )
    protection2 = _bits(
        (6, groups.any_of(alarms, groups.CHARGE_CURRENT)),
        (5, groups.any_of(alarms, groups.DISCHARGE_CURRENT)),
        (3, safe or groups.any_of(alarms, groups.SYSTEM_FAULTS)),
    )
    return bytes((alarm1, alarm2, protection1, protection2))


def reply_info(
    command: int,
    value: int,
    status: InverterStatus,
    phase: OutputPhase,
    requests: Requests,
    dialect: Rs485Dialect,
    identity: BatteryIdentity = BatteryIdentity(),
) -> tuple[int, bytes]:
    """RTN and INFO of the reply to `command` (`value`: the request's command value, 0xFF = whole system).

    Args:
        command: the request's CID2.
        value: its command value (module commands) or 0.
        status: the controller's status.
        phase: normal or safe (other phases answer nothing; the caller checks).
        requests: force-charge / full-charge requests.
        dialect: the inverter family's details.
        identity: names and versions for 0x51/0x93/0x96.
    """
    view = _view(status, phase, requests)
    if command == 0x4F:
        return RTN.NORMAL, b""
    if command == 0x51:
        software = bytes(identity.software_version)
        return RTN.NORMAL, _ascii(identity.battery_name, 10) + software + _ascii(identity.manufacturer, 20)
    if command == 0x42:
        if value == 0xFF:
            return RTN.NORMAL, b"\x00" + _u8(1) + _module_block(view)
        return RTN.NORMAL, b"\x00" + _u8(value) + _module_block(view)
    if command == 0x44:
        if value == 0xFF:
            return RTN.NORMAL, b"\x00" + _u8(1) + _alarm_block(view)
        return RTN.NORMAL, b"\x00" + _u8(value) + _alarm_block(view)
    if command == 0x92:
        return RTN.NORMAL, _u8(value) + _management(view, step=0.1, negative_dcl=dialect.discharge_limit_negative)
    if command == 0x93:
        return RTN.NORMAL, _u8(value) + _ascii(identity.serial_number, 16)
    if command == 0x96:
        return RTN.NORMAL, _u8(value) + bytes(identity.software_version) + bytes(identity.mainline_version)
    if command == 0x61:
        return RTN.NORMAL, _system_analog(view)
    if command == 0x62:
        return RTN.NORMAL, _system_alarm(view)
    if command == 0x63:
        cvl = math.floor(round((view.charge_voltage or 0.0) * 1000, 6))
        dvl = math.ceil(round((view.discharge_voltage or 0.0) * 1000, 6))
        step = dialect.system_current_scale
        info = _u16(cvl) + _u16(dvl) + _s16(_toward_zero(view.charge_current, step))
        info += _s16(_toward_zero(view.discharge_current, step)) + _u8(_system_status(view))
        return RTN.NORMAL, info
    return RTN.CID2_INVALID, b""


def answer(
    request: PylonFrame,
    status: InverterStatus,
    phase: OutputPhase,
    requests: Requests,
    dialect: Rs485Dialect,
    identity: BatteryIdentity = BatteryIdentity(),
) -> PylonFrame | None:
    """The reply to one well-formed request, or None when silence is the right answer.

    Silent: while the output is waiting or silent (data too old: the inverter's fallback must engage),
    for a request to another address, or one that is not for a battery (CID1 other than 0x46).
    """
    if not phase.transmits or request.cid1 != BATTERY:
        return None
    if dialect.addresses is not None and request.adr not in dialect.addresses:
        return None
    ver = dialect.protocol_version if request.cid2 == 0x4F else request.ver
    adr = request.adr if dialect.reply_address is None else dialect.reply_address
    command, info = request.cid2, request.info
    value = 0
    if command in _MODULE_COMMANDS:
        # V3.3 carries the address as the command value; 0xFF asks the whole group (0x42/0x44 only).
        if len(info) != 1 or not (info[0] == request.adr or (info[0] == 0xFF and command in _SYSTEM_WIDE)):
            return PylonFrame(ver, adr, BATTERY, RTN.COMMAND_FORMAT)
        value = info[0]
    rtn, payload = reply_info(command, value, status, phase, requests, dialect, identity)
    return PylonFrame(ver, adr, BATTERY, rtn, payload)

"""Statuses for the RS485 tests: a bank of given packs with limits chosen by the test."""

from __future__ import annotations

from typing import Any

from bmsgate.inverter.bank import PackInput, aggregate
from bmsgate.inverter.limits import ChargeMode, LimitReason, Limits
from bmsgate.inverter.status import InverterStatus
from bmsgate.model import BatterySnapshot

# Facts §5 A: a US-series 100 Ah module, 15 cells, charging at 20.1 A.
VECTOR_A_CELLS = (3351, 3348, 3349, 3349, 3352, 3351, 3348, 3349, 3349, 3352, 3351, 3348, 3349, 3349, 3352)

REQUEST_0x42 = b"~20024642E00202FD33\r"
REPLY_0x42 = (
    b"~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9"
    b"C447FFFF04FFFF00120172B90186A0E2D1\r"
)
REQUEST_0x92 = b"~20024692E00202FD2E\r"
REPLY_0x92_UP2500 = b"~20024600B014026EF05AA0022BFDD5C0F915\r"
REPLY_0x92_US = b"~20024600B01402D002AFC800C8FE0CC0F915\r"
REQUEST_0x44 = b"~20024644E00202FD31\r"
REPLY_0x44 = b"~20024600A04200020F000000000000000000000000000000050000000000000000000E80000000F101\r"
SRNE_POLLS = (b"~201246610000FDAA\r", b"~201246620000FDA9\r", b"~201246630000FDA8\r")
OTHER_REQUESTS = {
    0x4F: b"~2002464F0000FD98\r",
    0x51: b"~200246510000FDAC\r",
    0x47: b"~200246470000FDA7\r",
    0x93: b"~20024693E00202FD2D\r",
}
SYSTEM_0x42 = b"~20024642E002FFFD09\r"
DIYBMS_0x4F_REPLY = b"~280246000000FDAA\r"


def vector_a_snapshot(battery_id: str = "a", **changes: Any) -> BatterySnapshot:
    values: dict[str, Any] = {
        "battery_id": battery_id,
        "timestamp": 0.0,
        "voltage": 50.247,
        "current": 20.1,
        "soc": 95.0,
        "soh": 99.0,
        "remaining_capacity": 94.905,
        "full_capacity": 100.0,
        "cycles": 18,
        "cell_voltages": tuple(mv / 1000 for mv in VECTOR_A_CELLS),
        "temperatures": (32.4, 32.5, 32.2, 35.2),
        "mosfet_temperature": 35.2,
        "charge_enabled": True,
        "discharge_enabled": True,
    }
    values.update(changes)
    return BatterySnapshot(**values)


def status_of(
    *snapshots: BatterySnapshot,
    stale: bool = False,
    charge_voltage: float | None = 53.25,
    min_voltage: float | None = 45.0,
    charge_current: float = 20.0,
    discharge_current: float = 50.0,
) -> InverterStatus:
    packs = [PackInput(s.battery_id, s, stale, 1.0) for s in snapshots or (vector_a_snapshot(),)]
    bank = aggregate(packs)
    fresh = aggregate([PackInput(p.battery_id, p.snapshot, False, 1.0) for p in packs])
    reason = LimitReason.STALE_DATA if stale else LimitReason.NONE
    limits = Limits(
        charge_voltage=charge_voltage,
        charge_current=0.0 if stale else charge_current,
        discharge_current=0.0 if stale else discharge_current,
        charge_reason=reason,
        discharge_reason=reason,
        voltage_reason=reason,
        charge_mode=ChargeMode.BULK,
        stale=stale,
        max_charge_current=100.0,
        max_discharge_current=100.0,
        min_voltage=min_voltage,
    )
    return InverterStatus(bank=bank, limits=limits, last_fresh=fresh, data_age=1.0)

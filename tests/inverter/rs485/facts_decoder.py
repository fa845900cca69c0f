"""An independent reader of Pylontech LV RS485 frames, written from the facts file alone.

It shares no code with bmsgate.inverter.rs485 on purpose: it works on the hex *text* (the way the
vendor document describes the frame), recomputes LCHKSUM from the LENID nibbles and CHKSUM from the
ASCII sum, and decodes the reply layouts of rs485-and-more.md §1.6-1.7 field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class BadFrame(Exception):
    pass


@dataclass
class Frame:
    ver: int
    adr: int
    cid1: int
    cid2: int
    info_hex: str
    info: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.info = bytes.fromhex(self.info_hex)


def read(raw: bytes) -> Frame:
    text = raw.decode("ascii")
    if not (text.startswith("~") and text.endswith("\r")):
        raise BadFrame("markers")
    body = text[1:-1]
    ver, adr, cid1, cid2 = (int(body[i : i + 2], 16) for i in range(0, 8, 2))
    length = body[8:12]
    lenid = int(length[1:], 16)
    nibble_sum = sum(int(c, 16) for c in length[1:])
    if int(length[0], 16) != (16 - nibble_sum % 16) % 16:
        raise BadFrame("LCHKSUM")
    info_hex = body[12 : 12 + lenid]
    checked = body[: 12 + lenid]
    if len(body) != 12 + lenid + 4:
        raise BadFrame("length")
    if (0x10000 - sum(ord(c) for c in checked) % 0x10000) % 0x10000 != int(body[-4:], 16):
        raise BadFrame("CHKSUM")
    return Frame(ver, adr, cid1, cid2, info_hex)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int, *, signed: bool = False) -> int:
        value = int.from_bytes(self.data[self.at : self.at + n], "big", signed=signed)
        self.at += n
        return value


def kelvin(raw: int) -> float:
    return round((raw - 2731) / 10, 1)


def analog_0x42(info: bytes) -> dict[str, Any]:
    c = _Cursor(info)
    out: dict[str, Any] = {"infoflag": c.take(1), "command": c.take(1)}
    cells = c.take(1)
    out["cells_mv"] = [c.take(2) for _ in range(cells)]
    temps = c.take(1)
    out["temps_c"] = [kelvin(c.take(2, signed=True)) for _ in range(temps)]
    out["current_a"] = c.take(2, signed=True) / 10
    out["voltage_v"] = c.take(2) / 1000
    remaining1 = c.take(2)
    out["user_defined"] = c.take(1)
    total1 = c.take(2)
    out["cycles"] = c.take(2)
    if out["user_defined"] == 4:
        out["remaining_ah"] = c.take(3) / 1000
        out["total_ah"] = c.take(3) / 1000
        out["capacity1_fields"] = (remaining1, total1)
    else:
        out["remaining_ah"] = remaining1 / 1000
        out["total_ah"] = total1 / 1000
    return out


def alarm_0x44(info: bytes) -> dict[str, Any]:
    c = _Cursor(info)
    out: dict[str, Any] = {"dataflag": c.take(1), "command": c.take(1)}
    cells = c.take(1)
    out["cell_states"] = [c.take(1) for _ in range(cells)]
    temps = c.take(1)
    out["temp_states"] = [c.take(1) for _ in range(temps)]
    out["charge_current_state"] = c.take(1)
    out["module_voltage_state"] = c.take(1)
    out["discharge_current_state"] = c.take(1)
    out["status"] = [c.take(1) for _ in range(5)]
    return out


def management_0x92(info: bytes) -> dict[str, Any]:
    c = _Cursor(info)
    return {
        "command": c.take(1),
        "cvl_v": c.take(2) / 1000,
        "dvl_v": c.take(2) / 1000,
        "ccl_a": c.take(2, signed=True) / 10,
        "dcl_a": c.take(2, signed=True) / 10,
        "charge_enable": bool(info[9] & 0x80),
        "discharge_enable": bool(info[9] & 0x40),
        "charge_immediately_1": bool(info[9] & 0x20),
        "charge_immediately_2": bool(info[9] & 0x10),
        "full_charge_request": bool(info[9] & 0x08),
    }


def system_analog_0x61(info: bytes) -> dict[str, Any]:
    assert len(info) == 49
    c = _Cursor(info)
    out: dict[str, Any] = {
        "voltage_v": c.take(2) / 1000,
        "current_a": c.take(2, signed=True) / 100,
        "soc": c.take(1),
        "cycles_avg": c.take(2),
        "cycles_max": c.take(2),
        "soh_avg": c.take(1),
        "soh_min": c.take(1),
        "cell_max_mv": c.take(2),
        "cell_max_at": c.take(2),
        "cell_min_mv": c.take(2),
        "cell_min_at": c.take(2),
    }
    for group in ("cell_t", "mosfet_t", "bms_t"):
        out[f"{group}_avg"] = kelvin(c.take(2, signed=True))
        out[f"{group}_max"] = kelvin(c.take(2, signed=True))
        out[f"{group}_max_at"] = c.take(2)
        out[f"{group}_min"] = kelvin(c.take(2, signed=True))
        out[f"{group}_min_at"] = c.take(2)
    return out


def system_alarm_0x62(info: bytes) -> dict[str, bool]:
    a1, a2, p1, p2 = info[:4]
    names = {
        "module_high_v": (a1, 7),
        "module_low_v": (a1, 6),
        "cell_high_v": (a1, 5),
        "cell_low_v": (a1, 4),
        "cell_high_t": (a1, 3),
        "cell_low_t": (a1, 2),
        "mosfet_high_t": (a1, 1),
        "cell_imbalance": (a1, 0),
        "cell_t_imbalance": (a2, 7),
        "charge_overcurrent": (a2, 6),
        "discharge_overcurrent": (a2, 5),
        "internal_comm_error": (a2, 4),
        "protect_module_over_v": (p1, 7),
        "protect_module_under_v": (p1, 6),
        "protect_cell_over_v": (p1, 5),
        "protect_cell_under_v": (p1, 4),
        "protect_cell_over_t": (p1, 3),
        "protect_cell_under_t": (p1, 2),
        "protect_mosfet_over_t": (p1, 1),
        "protect_charge_overcurrent": (p2, 6),
        "protect_discharge_overcurrent": (p2, 5),
        "protect_system_fault": (p2, 3),
    }
    return {name: bool(byte >> bit & 1) for name, (byte, bit) in names.items()}


def management_0x63(info: bytes, amps_per_step: float) -> dict[str, Any]:
    c = _Cursor(info)
    return {
        "cvl_v": c.take(2) / 1000,
        "dvl_v": c.take(2) / 1000,
        "ccl_a": round(c.take(2, signed=True) * amps_per_step, 2),
        "dcl_a": round(c.take(2, signed=True) * amps_per_step, 2),
        "charge_enable": bool(info[8] & 0x80),
        "discharge_enable": bool(info[8] & 0x40),
        "charge_immediately": bool(info[8] & 0x20),
        "full_charge_request": bool(info[8] & 0x10),
    }

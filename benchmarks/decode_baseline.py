"""bmsgate's decoder against hand-written ``struct`` code of the same polls, in one process, as a ratio.

The baselines are what a careful programmer writes for one BMS: one precompiled ``struct`` per frame,
checksums verified, every scale inline, device information cached by its raw bytes, and one
`BatterySnapshot` built through its public constructor. Before timing, each baseline's snapshot must equal
bmsgate's on the same frames (else the comparison would be meaningless and the script stops).

Polls: JBD 16S (0x03 + 0x04 replies), JK02 24S and JK02 32S (device info + cell info). Timing interleaves
bmsgate and the baseline in short rounds and keeps the best of each (a shared, noisy machine), so the
ratio compares like with like; rates are calls per CPU second of this process (see `rates`). Then
figures for every built-in protocol (assembled frames and raw bytes): one poll from the simulator, or
from the protocol's conformance vector where the simulator cannot serve it.

Run: .venv/bin/python benchmarks/decode_baseline.py [--seconds 0.3] [--rounds 9]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import BmsgateError
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.protocols import CompiledProtocol, Frame, decode, get_protocol
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms

_VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors"

# -- JBD: hand-written ----------------------------------------------------------------------------------

_JBD_BASIC = struct.Struct(">HhHHHHHHHBBBBB")
_JBD_ALARMS = (
    Alarm.CELL_OVERVOLTAGE,
    Alarm.CELL_UNDERVOLTAGE,
    Alarm.PACK_OVERVOLTAGE,
    Alarm.PACK_UNDERVOLTAGE,
    Alarm.CHARGE_OVERTEMPERATURE,
    Alarm.CHARGE_UNDERTEMPERATURE,
    Alarm.DISCHARGE_OVERTEMPERATURE,
    Alarm.DISCHARGE_UNDERTEMPERATURE,
    Alarm.CHARGE_OVERCURRENT,
    Alarm.DISCHARGE_OVERCURRENT,
    Alarm.SHORT_CIRCUIT,
    Alarm.FRONT_END_FAULT,
    Alarm.MOSFET_SOFTWARE_LOCK,
)
_jbd_devices: dict[tuple[int, int], DeviceInfo] = {}


def _jbd_check(raw: bytes) -> int:
    if raw[0] != 0xDD or raw[-1] != 0x77 or len(raw) != raw[3] + 7 or raw[2] != 0:
        raise ValueError("bad JBD frame")
    if (0x10000 - sum(raw[2:-3])) & 0xFFFF != (raw[-3] << 8 | raw[-2]):
        raise ValueError("bad JBD checksum")
    return raw[1]


def _jbd_device(date: int, version: int) -> DeviceInfo:
    info = _jbd_devices.get((date, version))
    if info is None:
        production = None
        if date:
            try:
                production = dt.date((date >> 9) + 2000, (date >> 5) & 0x0F, date & 0x1F)
            except ValueError:
                production = None
        info = _jbd_devices[date, version] = DeviceInfo(
            manufacturer="Jiabaida", software_version=f"{version >> 4}.{version & 0x0F}", production_date=production
        )
    return info


def jbd_baseline(frames: Sequence[bytes]) -> BatterySnapshot:
    """A JBD 0x03 + 0x04 poll the way one writes it by hand."""
    basic = cells = b""
    for raw in frames:
        key = _jbd_check(raw)
        if key == 3:
            basic = raw
        elif key == 4:
            cells = raw
    (voltage, current, remaining, full, cycles, date, bal_low, bal_high, alarm_bits, version, soc, fets, _n, ntc) = (
        _JBD_BASIC.unpack_from(basic, 4)
    )
    temperatures = tuple((raw - 2731) / 10 for raw in struct.unpack_from(f">{ntc}H", basic, 27))
    count = (len(cells) - 7) // 2
    voltages = tuple(raw / 1000 for raw in struct.unpack_from(f">{count}H", cells, 4))
    balancing = tuple(
        [cell + 1 for cell in range(16) if bal_low >> cell & 1]
        + [cell + 17 for cell in range(16) if bal_high >> cell & 1]
    )
    return BatterySnapshot(
        battery_id="bench",
        timestamp=0.0,
        protocol="jbd",
        voltage=voltage / 100,
        current=current / 100,
        remaining_capacity=remaining / 100,
        full_capacity=full / 100,
        cycles=cycles,
        balancing_cells=balancing,
        alarms=frozenset(alarm for bit, alarm in enumerate(_JBD_ALARMS) if alarm_bits >> bit & 1),
        soc=soc * 1.0 + 0.0,
        charge_enabled=bool(fets & 1),
        discharge_enabled=bool(fets & 2),
        temperatures=temperatures,
        cell_voltages=voltages,
        device=_jbd_device(date, version),
    )


# -- JK02: hand-written ---------------------------------------------------------------------------------

_JK_ALARMS = (
    Alarm.WIRE_RESISTANCE,
    Alarm.MOSFET_OVERTEMPERATURE,
    Alarm.CELL_COUNT_MISMATCH,
    Alarm.CURRENT_SENSOR_FAULT,
    Alarm.BATTERY_FULL,
    Alarm.PACK_OVERVOLTAGE,
    Alarm.CHARGE_OVERCURRENT,
    Alarm.CHARGE_SHORT_CIRCUIT,
    Alarm.CHARGE_OVERTEMPERATURE,
    Alarm.CHARGE_UNDERTEMPERATURE,
    Alarm.INTERNAL_COMMUNICATION_FAULT,
    Alarm.CELL_UNDERVOLTAGE,
    Alarm.PACK_UNDERVOLTAGE,
    Alarm.DISCHARGE_OVERCURRENT,
    Alarm.DISCHARGE_SHORT_CIRCUIT,
    Alarm.DISCHARGE_OVERTEMPERATURE,
    Alarm.CHARGE_MOSFET_FAULT,
    Alarm.DISCHARGE_MOSFET_FAULT,
    None,
    None,
    None,
    Alarm.BATTERY_OVERTEMPERATURE,
    Alarm.TEMPERATURE_SENSOR_FAULT,
)
_JK_ACTIONS = {0: "off", 1: "charging", 2: "discharging"}
_jk_devices: dict[bytes, tuple[DeviceInfo, int, int]] = {}


def _jk_text(raw: bytes) -> str | None:
    text = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    return text or None


def _jk_device(raw: bytes) -> tuple[DeviceInfo, int, int]:
    known = _jk_devices.get(raw)
    if known is None:
        software = _jk_text(raw[30:38]) or ""
        digits = software.split(".", 1)[0]
        date_text = _jk_text(raw[78:86])
        info = DeviceInfo(
            manufacturer="Jikong",
            model=_jk_text(raw[6:22]),
            hardware_version=_jk_text(raw[22:30]),
            software_version=software or None,
            name=_jk_text(raw[46:62]),
            serial_number=_jk_text(raw[86:97]),
            production_date=dt.datetime.strptime(date_text, "%y%m%d").date() if date_text else None,
        )
        known = _jk_devices[raw] = (info, int(digits) if digits.isdigit() else 0, int.from_bytes(raw[38:42], "little"))
    return known


def _jk_check(raw: bytes) -> int:
    if raw[:4] != b"\x55\xaa\xeb\x90" or len(raw) < 300 or sum(raw[:299]) & 0xFF != raw[299]:
        raise ValueError("bad JK frame")
    return raw[4]


_JK32 = struct.Struct("<6x32HIHHBB32Hh4xIIihhIhBBIIIIB3xIBB")
_JK24 = struct.Struct("<6x24HIHHBB24H6xIIihhhHhBBIIIIB3xIBB")
_JK_EXTRA_TEMPS = struct.Struct("<hhh")


def _jk_tail(
    cells: tuple[float, ...],
    wires: Sequence[int],
    rest: tuple[Any, ...],
    info: DeviceInfo,
    uptime: int | None,
    temperatures: tuple[float, ...],
    heating: int,
) -> BatterySnapshot:
    (mask, average, delta, cmax, cmin) = rest[:5]
    (voltage, power, current, mos, bal_current, balancing, soc, remaining, full, cycles, total, soh, runtime) = rest[
        5:18
    ]
    alarm_bits, chg, dis = rest[18:21]
    extras: dict[str, Any] = {} if uptime is None else {"uptime": uptime}
    extras["cell_average"] = average / 1000
    extras["cell_delta"] = delta / 1000
    extras["cell_max_number"] = cmax + 1
    extras["cell_min_number"] = cmin + 1
    extras["power"] = power / 1000
    extras["balancing_action"] = _JK_ACTIONS.get(balancing, balancing)
    extras["total_cycle_capacity"] = total / 1000
    extras["total_runtime"] = runtime
    for number, raw in enumerate(wires[:mask], start=1):
        extras[f"cell_wire_resistance_{number}"] = raw / 1000
    return BatterySnapshot(
        battery_id="bench",
        timestamp=0.0,
        protocol="jk",
        cell_voltages=cells,
        voltage=voltage / 1000,
        current=current / 1000,
        temperatures=temperatures,
        mosfet_temperature=mos / 10,
        alarms=frozenset(alarm for bit, alarm in enumerate(_JK_ALARMS) if alarm is not None and alarm_bits >> bit & 1),
        balance_current=bal_current / 1000,
        balancing=bool(balancing),
        soc=soc * 1.0 + 0.0,
        remaining_capacity=remaining / 1000,
        full_capacity=full / 1000,
        cycles=cycles,
        soh=soh * 1.0 + 0.0,
        charge_enabled=bool(chg),
        discharge_enabled=bool(dis),
        heating=bool(heating),
        device=info,
        extras=extras,
    )


def jk32_baseline(frames: Sequence[bytes]) -> BatterySnapshot:
    """A JK02 32S poll (device info + cell info) the way one writes it by hand."""
    info, major, uptime, cells_raw = EMPTY_JK, 0, None, b""
    for raw in frames:
        key = _jk_check(raw)
        if key == 3:
            info, major, uptime = _jk_device(raw)
        elif key == 2:
            cells_raw = raw
    values = _JK32.unpack_from(cells_raw)
    mask = values[32].bit_count()
    cells = tuple(raw / 1000 for raw in values[:mask])
    v = values[32:]
    (_mask_raw, average, delta, cmax, cmin) = v[:5]
    wires = v[5:37]
    mos, voltage, power, current, t1, t2, alarm_bits, bal_current, balancing, soc = v[37:47]
    remaining, full, cycles, total, soh, runtime, chg, dis = v[47:55]
    temperatures = [t1 / 10, t2 / 10]
    if major >= 14:
        for raw in reversed(_JK_EXTRA_TEMPS.unpack_from(cells_raw, 254)):
            if raw != -2000:
                temperatures.append(raw / 10)
    rest: tuple[Any, ...] = (
        mask,
        average,
        delta,
        cmax,
        cmin,
        voltage,
        power,
        current,
        mos,
        bal_current,
        balancing,
        soc,
    )
    rest += (remaining, full, cycles, total, soh, runtime, alarm_bits, chg, dis)
    return _jk_tail(cells, wires, rest, info, uptime, tuple(temperatures), cells_raw[215])


def jk24_baseline(frames: Sequence[bytes]) -> BatterySnapshot:
    """A JK02 24S poll (device info + cell info) the way one writes it by hand."""
    info, uptime, cells_raw = EMPTY_JK, None, b""
    for raw in frames:
        key = _jk_check(raw)
        if key == 3:
            info, _major, uptime = _jk_device(raw)
        elif key == 2:
            cells_raw = raw
    values = _JK24.unpack_from(cells_raw)
    mask = values[24].bit_count()
    cells = tuple(raw / 1000 for raw in values[:mask])
    v = values[24:]
    (_maskraw, average, delta, cmax, cmin) = v[:5]
    wires = v[5:29]
    voltage, power, current, t1, t2, mos, alarm_bits, bal_current, balancing, soc = v[29:39]
    remaining, full, cycles, total, soh, runtime, chg, dis = v[39:47]
    rest: tuple[Any, ...] = (
        mask,
        average,
        delta,
        cmax,
        cmin,
        voltage,
        power,
        current,
        mos,
        bal_current,
        balancing,
        soc,
    )
    rest += (remaining, full, cycles, total, soh, runtime, alarm_bits, chg, dis)
    temperatures = (t1 / 10, t2 / 10)
    return _jk_tail(cells, wires, rest, info, uptime, temperatures, cells_raw[183])


EMPTY_JK = DeviceInfo(manufacturer="Jikong")

# -- the polls ------------------------------------------------------------------------------------------


def _pack(cells: int) -> PackModel:
    pack = PackModel(PackConfig(cells=cells, ntc_count=3 if cells == 16 else 2))
    pack.advance(900.0)
    return pack


def jbd_poll() -> list[bytes]:
    """Raw 0x03 + 0x04 frames of a 16-cell JBD pack."""
    jbd = get_protocol("jbd")
    state = _pack(16).state()
    return [jbd.encode_reply(0x03, state), jbd.encode_reply(0x04, state)]


def jk_poll(cells: int, software: str) -> list[bytes]:
    """Raw device-info + cell-info frames of a JK pack whose software version selects the layout."""
    jk = get_protocol("jk")
    state = VirtualBms(jk, _pack(cells)).state()
    state["device.software_version"] = software
    state["var.software_major"] = int(software.split(".", 1)[0])
    return [jk.encode_reply(0x03, state), jk.encode_reply(0x02, state)]


def _bmsgate(
    protocol: CompiledProtocol, variant: str | None = None
) -> Callable[[Sequence[bytes | Frame]], BatterySnapshot]:
    def run(frames: Sequence[bytes | Frame]) -> BatterySnapshot:
        return decode(protocol, frames, battery_id="bench", timestamp=0.0, variant=variant)

    return run


def rates(functions: Sequence[Callable[[Any], Any]], inputs: Sequence[Any], seconds: float, rounds: int) -> list[float]:
    """Best calls per CPU second of each function, the functions interleaved round by round.

    The clock is this process's CPU time: on a shared machine, time spent waiting for a core is not
    charged to whichever function happened to run (wall time made the figures swing by 2x here).
    """
    best = [0.0] * len(functions)
    for function, argument in zip(functions, inputs, strict=True):
        for _ in range(500):
            function(argument)
    for _ in range(rounds):
        for position, (function, argument) in enumerate(zip(functions, inputs, strict=True)):
            count = 0
            started = time.process_time()
            deadline = started + seconds
            while time.process_time() < deadline:
                for _ in range(200):
                    function(argument)
                count += 200
            best[position] = max(best[position], count / (time.process_time() - started))
    return best


def _compare(label: str, ours: BatterySnapshot, theirs: BatterySnapshot) -> None:
    if ours != theirs:
        mine, base = ours.to_dict(), theirs.to_dict()
        diff = {
            key: (mine.get(key), base.get(key)) for key in mine.keys() | base.keys() if mine.get(key) != base.get(key)
        }
        raise SystemExit(f"{label}: the baseline decodes differently from bmsgate: {diff}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (best of each is kept)")
    parser.add_argument("--skip-all", action="store_true", help="only the baseline comparison")
    parser.add_argument("--only-all", action="store_true", help="only the every-protocol figures")
    args = parser.parse_args()
    jk24, jk32 = jk_poll(24, "10.XW"), jk_poll(32, "14.20")
    cases = (
        ("JBD 16S (0x03 + 0x04)", "jbd", None, jbd_poll(), jbd_baseline),
        ("JK02 24S (0x03 + 0x02)", "jk", None, jk24, jk24_baseline),
        ("JK02 32S (0x03 + 0x02)", "jk", None, jk32, jk32_baseline),
        # One streamed frame, the layout known from the connection's device info.
        ("JK02 24S cell info only", "jk", "jk02_24s", jk24[1:], jk24_baseline),
        ("JK02 32S cell info only", "jk", "jk02_32s", jk32[1:], jk32_baseline),
    )
    print(f"{'poll':<24} {'bmsgate/s':>10} {'struct/s':>10} {'ratio':>6}   (raw frames: checksums verified both sides)")
    for label, name, variant, frames, baseline in () if args.only_all else cases:
        ours = _bmsgate(get_protocol(name), variant)
        _compare(label, ours(frames), baseline(frames))
        mine, base = rates((ours, baseline), (frames, frames), args.seconds, args.rounds)
        print(f"{label:<24} {mine:>10,.0f} {base:>10,.0f} {mine / base:>5.2f}x")
    if args.skip_all:
        return
    print()
    print(f"{'protocol':<10} {'frames':>6} {'assembled/s':>12} {'raw bytes/s':>12} {'µs/poll':>8}  frames from")
    for name in default_catalog().names(Kind.PROTOCOL):
        protocol = get_protocol(name)
        assembled, origin = poll_frames(protocol)
        raw = [frame.raw for frame in assembled]
        run = _bmsgate(protocol)
        fast, checked = rates((run, run), (assembled, raw), args.seconds, max(3, args.rounds // 3))
        print(f"{name:<10} {len(assembled):>6} {fast:>12,.0f} {checked:>12,.0f} {1e6 / fast:>8.1f}  {origin}")


def _assemble(protocol: CompiledProtocol, chunks: Iterable[bytes]) -> list[Frame]:
    assembler = protocol.new_assembler()
    frames: list[Frame] = []
    for chunk in chunks:
        frames += assembler.feed(chunk)
    return frames


def _decodes(protocol: CompiledProtocol, frames: Sequence[Frame]) -> bool:
    try:
        decode(protocol, frames, battery_id="bench", timestamp=0.0)
    except BmsgateError:
        return False
    return bool(frames)


def poll_frames(protocol: CompiledProtocol) -> tuple[list[Frame], str]:
    """One poll's frames of any definition, and where they came from.

    The simulator (a 16-cell pack) answers every reply the requests name, streamed or asked for; a
    definition it cannot serve yet falls back to the frames of its conformance vector (spec/vectors/),
    which every built-in protocol must have.
    """
    bms = VirtualBms(protocol, _pack(16))
    keys = dict.fromkeys(request.reply for request in protocol.requests if request.reply is not None)
    frames = _assemble(protocol, [chunk for key in keys for chunk in bms.replies_for(key)])
    if _decodes(protocol, frames):
        return frames, "simulator, 16 cells"
    for path in sorted((_VECTORS / protocol.name).glob("decode-*.json")):
        vector = json.loads(path.read_text(encoding="utf-8"))
        if vector.get("protocol") != protocol.name:
            continue
        frames = _assemble(protocol, [bytes.fromhex(chunk) for chunk in vector["chunks"]])
        if _decodes(protocol, frames):
            return frames, f"spec/vectors/{protocol.name}/{path.name}"
    raise SystemExit(f"{protocol.name}: neither the simulator nor a conformance vector gives a decodable poll")


if __name__ == "__main__":
    main()

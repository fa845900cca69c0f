r"""bmsgate's decoder against aiobmsble 0.31 on identical frames, in one process, values compared first.

Both sides get the same reply frames (JBD 16S 0x03 + 0x04; JK02 24S and 32S device info + cell info, the
frames `decode_baseline.py` builds; and two real captures) as the same BLE notifications, and check every
frame: first one notification per frame, then (second table) every frame split into 20-byte notifications,
the size a default BLE MTU gives, which each side reassembles. bmsgate runs its public path: the
protocol's frame assembler (one per connection) and `decode`. aiobmsble is driven through its public
per-poll path, `BaseBMS.async_update()`: the link is replaced by a hook that hands the notifications of
the next frame to the class's own notification handler (reassembly, frame checks, checksum) when the class
asks the BMS for a reply, so the coroutine never suspends and one ``send(None)`` runs a whole poll. JK
streams its cell info without being asked, so for JK the cell-info notifications go to the handler first,
as the BLE stack would deliver them. The ``0x03 + 0x02`` rows also charge aiobmsble its device-info read
(``_fetch_device_info``), which it normally does once per connection; the "cell info only" rows are the
steady-state poll of both libraries (bmsgate told the layout, as aiobmsble knows it from the firmware).

Before timing, the values both decode must agree (voltages, current, capacities, cycles, state of charge,
MOSFETs, cell voltages, temperatures, device strings): else the comparison would be meaningless and the
script stops. Timing interleaves the two in short rounds and keeps the best of each, in calls per CPU
second of this process (`decode_baseline.rates`: a shared, noisy machine).

aiobmsble is never part of bmsgate. To set it up (Python 3.11 here, aiobmsble 0.31 wants 3.12):

    python3 -m venv /work/scratch/aiobmsble-venv
    /work/scratch/aiobmsble-venv/bin/pip install 'aiobmsble==0.31.*' --ignore-requires-python
    cd /work/scratch/aiobmsble-venv/lib/python3.11/site-packages
    # 3.12 syntax -> 3.11: `type X = Y` aliases become plain assignments; one f-string reuses its quotes.
    sed -i -E 's/^(\s*)type ([A-Za-z_][A-Za-z0-9_]*) = /\1\2 = /' \
        aiobmsble/__init__.py aiobmsble/basebms.py aiobmsble/_boundedbytearr.py \
        aiobmsble/bms/neey_bms.py aiobmsble/test_data/__init__.py
    sed -i "s/({\",\".join(char.properties)})/({','.join(char.properties)})/" aiobmsble/basebms.py
    # `value in EnumClass` needs 3.12 (JK firmware >= 15): ask the enum's value map instead.
    sed -i 's/in BMSMode else/in BMSMode._value2member_map_ else/' aiobmsble/bms/jikong_bms.py

Run: .venv/bin/python benchmarks/decode_aiobmsble.py \
        --aiobmsble-path /work/scratch/aiobmsble-venv/lib/python3.11/site-packages [--seconds 0.3] [--rounds 9]

The directory is appended to ``sys.path`` (bmsgate's own dependencies, bleak among them, come first).
Without an importable aiobmsble the script says so and exits without figures.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository, for tests.protocols

from tests.protocols.public_frames import JK_V15_CELL_INFO, JK_V15_DEVICE_INFO
from tests.protocols.test_jbd import VENDOR_17S_BASIC, VENDOR_17S_CELLS

from benchmarks.decode_baseline import jbd_poll, jk_poll, rates
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import decode, get_protocol

_JK_SENSOR_MASK = 214
"""Cell-info byte (32S layout; 32 lower in 24S) whose bits say which temperature sensors are fitted."""
_JK_CHECKSUM = 299

_DEVICE_DETAILS = {"path": "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01"}


class _Suspended(RuntimeError):
    """aiobmsble's poll waited for something the replay did not give (the driver is out of step)."""


def _run_to_end(coroutine: Any) -> Any:
    """Run a coroutine that never suspends; its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise _Suspended("aiobmsble's poll suspended: it waited for a reply the replay did not give")


Notified = Sequence[Sequence[bytearray]]
"""One poll as the link delivers it: per frame, its notifications (one, or MTU-sized pieces)."""


def notifications(frames: Sequence[bytes], size: int | None) -> list[list[bytearray]]:
    """Each frame as the notifications a BLE link delivers (bytearrays, as bleak hands them over)."""
    if size is None:
        return [[bytearray(frame)] for frame in frames]
    return [[bytearray(frame[start : start + size]) for start in range(0, len(frame), size)] for frame in frames]


class AiobmsbleReplay:
    """One aiobmsble BMS object whose link replays given notifications into its own notification handler."""

    def __init__(self, module: Any, device_type: Any) -> None:
        self.bms = module.BMS(device_type("AA:BB:CC:DD:EE:01", "bench", _DEVICE_DETAILS))
        self._pending: list[Sequence[bytearray]] = []
        self.bms._await_msg = self._answer
        self.bms._connect = self._connected

    async def _answer(self, *_args: Any, **_kwargs: Any) -> None:
        # The BMS answers the request: its reply arrives as notifications.
        self.notify(self._pending.pop(0))

    async def _connected(self) -> None:
        """The link is up already."""

    def notify(self, chunks: Sequence[bytearray]) -> None:
        """Notifications of one frame (what a JK BMS streams on its own, or the answer to a request)."""
        handler = self.bms._notification_handler
        for chunk in chunks:
            handler(None, chunk)

    def poll(self, answers: Notified) -> dict[str, Any]:
        """One ``async_update()`` whose requests are answered by `answers`, in order."""
        self._pending[:] = answers
        result: dict[str, Any] = _run_to_end(self.bms.async_update())
        return result

    def device_info(self, answer: Sequence[bytearray]) -> dict[str, Any]:
        """aiobmsble's device-information read, answered by `answer`."""
        self._pending[:] = [answer]
        result: dict[str, Any] = _run_to_end(self.bms._fetch_device_info())
        return result


def _jbd(module: Any, device_type: Any) -> Callable[[Notified], dict[str, Any]]:
    replay = AiobmsbleReplay(module, device_type)
    return replay.poll


def _jk(
    module: Any, device_type: Any, software_major: int, *, with_device_info: bool
) -> Callable[[Notified], dict[str, Any]]:
    replay = AiobmsbleReplay(module, device_type)
    # What its connection set-up derives from the device info (JK02 24S firmware < 11 sits 32 bytes lower).
    replay.bms._sw_version = software_major
    replay.bms._prot_offset = -32 if software_major < 11 else 0

    def poll(frames: Notified) -> dict[str, Any]:
        info = replay.device_info(frames[0]) if with_device_info else {}
        replay.notify(frames[-1])
        values = replay.poll(())
        values.update(info)
        return values

    return poll


def _bmsgate(protocol: Any, variant: str | None) -> Callable[[Notified], BatterySnapshot]:
    """bmsgate's poll over the same notifications: one connection's assembler (checks every frame), decode."""
    feed = protocol.new_assembler().feed

    def poll(frames: Notified) -> BatterySnapshot:
        assembled = [frame for chunks in frames for chunk in chunks for frame in feed(chunk)]
        return decode(protocol, assembled, battery_id="bench", timestamp=0.0, variant=variant)

    return poll


def _same(label: str, name: str, ours: Any, theirs: Any) -> None:
    if isinstance(ours, float | int) and isinstance(theirs, float | int):
        equal = math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-9)
    elif isinstance(ours, Sequence) and isinstance(theirs, Sequence) and not isinstance(ours, str):
        equal = len(ours) == len(theirs) and all(
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(ours, theirs, strict=True)
        )
    else:
        equal = ours == theirs
    if not equal:
        raise SystemExit(f"{label}: {name} differs: bmsgate {ours!r}, aiobmsble {theirs!r}")


def compare(label: str, snapshot: BatterySnapshot, values: dict[str, Any]) -> int:
    """Stop unless both decoded the same values; how many values were compared."""
    full = snapshot.full_capacity
    pairs: list[tuple[str, Any, Any]] = [
        ("voltage", snapshot.voltage, values["voltage"]),
        ("current", snapshot.current, values["current"]),
        ("remaining capacity", snapshot.remaining_capacity, values["cycle_charge"]),
        ("full capacity (whole Ah)", None if full is None else int(full), values["design_capacity"]),
        ("cycles", snapshot.cycles, values["cycles"]),
        ("soc", snapshot.soc, values["battery_level"]),
        ("charge MOSFET", snapshot.charge_enabled, values["chrg_mosfet"]),
        ("discharge MOSFET", snapshot.discharge_enabled, values["dischrg_mosfet"]),
        ("cell voltages", snapshot.cell_voltages, values["cell_voltages"]),
        ("cell count", len(snapshot.cell_voltages), values["cell_count"]),
        ("alarms present", bool(snapshot.alarms), bool(values["problem_code"])),
    ]
    # aiobmsble lists the MOSFET sensor among its temperatures; bmsgate keeps it apart.
    mosfet = [] if snapshot.mosfet_temperature is None else [snapshot.mosfet_temperature]
    ours = sorted([*snapshot.temperatures, *mosfet])
    theirs = sorted(sensor.value for sensor in values["temp_values"])
    if len(theirs) == len(snapshot.temperatures):
        ours = sorted(snapshot.temperatures)
    pairs.append(("temperatures", ours, theirs))
    if "balance_current" in values:
        pairs.append(("balance current", snapshot.balance_current, values["balance_current"]))
        pairs.append(("soh", snapshot.soh, values["battery_health"]))
        pairs.append(("heating", snapshot.heating, values["heater"]))
        pairs.append(("cell delta", snapshot.extras["cell_delta"], values["delta_voltage"]))
    device = snapshot.device
    for ours_name, theirs_name in (
        ("model", "model"),
        ("hardware_version", "hw_version"),
        ("software_version", "sw_version"),
        ("name", "name"),
    ):
        if theirs_name in values:
            pairs.append((f"device {ours_name}", getattr(device, ours_name), values[theirs_name]))
    for name, mine, other in pairs:
        _same(label, name, mine, other)
    return len(pairs)


def with_sensor_mask(cell_info: bytes, software_major: int, sensors: int) -> bytes:
    """The simulator's JK cell-info frame with its sensor-presence byte set (bmsgate does not decode it, so
    the encoder leaves it 0; aiobmsble reads no temperature without it), checksum updated."""
    frame = bytearray(cell_info)
    frame[_JK_SENSOR_MASK - (32 if software_major < 11 else 0)] = (1 << sensors) - 1
    frame[_JK_CHECKSUM] = sum(frame[:_JK_CHECKSUM]) & 0xFF
    return bytes(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiobmsble-path", required=True, help="site-packages directory holding aiobmsble 0.31")
    parser.add_argument("--seconds", type=float, default=0.3, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (best of each is kept)")
    parser.add_argument("--notification", type=int, default=20, help="BLE notification size of the second table")
    args = parser.parse_args()
    sys.path.append(args.aiobmsble_path)
    try:
        jbd_module = importlib.import_module("aiobmsble.bms.jbd_bms")
        jk_module = importlib.import_module("aiobmsble.bms.jikong_bms")
        version = importlib.import_module("aiobmsble").__version__
        device_type = importlib.import_module("bleak.backends.device").BLEDevice
    except (ImportError, SyntaxError) as exc:
        print(f"skipped: aiobmsble is not importable from {args.aiobmsble_path} ({exc}); see this script's docstring")
        return
    jk24, jk32 = jk_poll(24, "10.XW"), jk_poll(32, "14.20")
    # Sensors 0..2 in 24S (two cell sensors, the MOSFET), 0..5 from software 14 on (MOSFET at 0 and 3).
    jk24[1] = with_sensor_mask(jk24[1], 10, 3)
    jk32[1] = with_sensor_mask(jk32[1], 14, 6)
    captured_jbd = [bytes.fromhex(VENDOR_17S_BASIC), bytes.fromhex(VENDOR_17S_CELLS)]
    captured_jk = [JK_V15_DEVICE_INFO, JK_V15_CELL_INFO]
    jk24_poll = _jk(jk_module, device_type, 10, with_device_info=False)
    jk32_poll = _jk(jk_module, device_type, 14, with_device_info=False)
    cases: tuple[tuple[str, str, str | None, list[bytes], Callable[[Notified], dict[str, Any]]], ...] = (
        ("JBD 16S (0x03 + 0x04)", "jbd", None, jbd_poll(), _jbd(jbd_module, device_type)),
        ("JK02 24S (0x03 + 0x02)", "jk", None, jk24, _jk(jk_module, device_type, 10, with_device_info=True)),
        ("JK02 32S (0x03 + 0x02)", "jk", None, jk32, _jk(jk_module, device_type, 14, with_device_info=True)),
        ("JK02 24S cell info only", "jk", "jk02_24s", jk24[1:], jk24_poll),
        ("JK02 32S cell info only", "jk", "jk02_32s", jk32[1:], jk32_poll),
        ("captured JBD 17S", "jbd", None, captured_jbd, _jbd(jbd_module, device_type)),
        ("captured JK02 32S v15", "jk", None, captured_jk, _jk(jk_module, device_type, 15, with_device_info=True)),
    )
    print(f"aiobmsble {version}; both check every frame (markers, length, checksum); values compared before timing")
    for size in (None, args.notification):
        print()
        how = "one notification per frame" if size is None else f"{size}-byte BLE notifications (reassembled)"
        print(f"{how}:")
        print(
            f"{'poll':<24} {'bmsgate/s':>10} {'aiobmsble/s':>12} {'ratio':>6}  {'µs bmsgate':>10} {'µs aiobmsble':>12}"
        )
        for label, name, variant, frames, theirs in cases:
            ours = _bmsgate(get_protocol(name), variant)
            delivered = notifications(frames, size)
            compared = compare(label, ours(delivered), theirs(delivered))
            mine, other = rates((ours, theirs), (delivered, delivered), args.seconds, args.rounds)
            print(
                f"{label:<24} {mine:>10,.0f} {other:>12,.0f} {mine / other:>5.2f}x"
                f"  {1e6 / mine:>10.1f} {1e6 / other:>12.1f}  ({compared} values agree)"
            )


if __name__ == "__main__":
    main()

"""JK02 (JK / Jikong BLE): every field and quirk, with frames built from the layout in jk.md.

The builders below write bytes at the offsets the shared protocol notes give (not through the engine's
own encoder), so a wrong offset in jk.yaml shows up as a wrong value here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import struct
from typing import Any

import pytest

from bmsgate.app.cli.main import main
from bmsgate.errors import FrameError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol
from bmsgate.runtime.client import BatteryClient
from bmsgate.runtime.simulation import PackConfig
from bmsgate.transports.simulator import SimulatorTransport

JK = get_protocol("jk")
ACK = bytes.fromhex("AA5590EBC8010100000000000000000000000044")

# (24S offset, 32S offset) of every cell-info field, from jk.md.
OFFSETS: dict[str, tuple[int, int]] = {
    "mask": (54, 70),
    "average": (58, 74),
    "delta": (60, 76),
    "max_index": (62, 78),
    "min_index": (63, 79),
    "resistance": (64, 80),
    "mosfet": (134, 144),
    "voltage": (118, 150),
    "power": (122, 154),
    "current": (126, 158),
    "t1": (130, 162),
    "t2": (132, 164),
    "alarms": (136, 166),
    "balance_current": (138, 170),
    "action": (140, 172),
    "soc": (141, 173),
    "remaining": (142, 174),
    "full": (146, 178),
    "cycles": (150, 182),
    "cycle_capacity": (154, 186),
    "soh": (158, 190),
    "runtime": (162, 194),
    "charge": (166, 198),
    "discharge": (167, 199),
    "heating": (183, 215),
}


def _finish(frame: bytearray) -> bytes:
    frame[299] = sum(frame[:299]) & 0xFF
    return bytes(frame)


def cell_info(
    layout: str = "32s",
    *,
    cells: list[int] | None = None,
    resistances: list[int] | None = None,
    alarms: int = 0,
    t345: tuple[int, int, int] = (-2000, -2000, -2000),
    action: int = 1,
) -> bytes:
    """A type-0x02 frame; raw units as on the wire (mV, mA, 0.1 °C, mAh, mΩ)."""
    column = 0 if layout == "24s" else 1
    cells = cells if cells is not None else [3300 + index for index in range(16)]
    resistances = resistances if resistances is not None else [60 + index for index in range(len(cells))]
    frame = bytearray(300)
    frame[0:6] = bytes.fromhex("55AAEB9002") + b"\x07"

    def put(name: str, fmt: str, value: Any) -> None:
        struct.pack_into("<" + fmt, frame, OFFSETS[name][column], value)

    for index, millivolts in enumerate(cells):
        struct.pack_into("<H", frame, 6 + 2 * index, millivolts)
    for index, milliohms in enumerate(resistances):
        struct.pack_into("<H", frame, OFFSETS["resistance"][column] + 2 * index, milliohms)
    put("mask", "I", (1 << len(cells)) - 1)
    put("average", "H", 3307)
    put("delta", "H", 15)
    put("max_index", "B", 15)
    put("min_index", "B", 0)
    put("mosfet", "h", 312)
    put("voltage", "I", 52_912)
    put("power", "I", 529_120)
    put("current", "i", -10_000)
    put("t1", "h", 215)
    put("t2", "h", -35)
    put("alarms", "H" if layout == "24s" else "I", alarms)
    put("balance_current", "h", -250)
    put("action", "B", action)
    put("soc", "B", 77)
    put("remaining", "I", 215_600)
    put("full", "I", 280_000)
    put("cycles", "I", 42)
    put("cycle_capacity", "I", 11_760_000)
    put("soh", "B", 99)
    put("runtime", "I", 3_456_789)
    put("charge", "B", 1)
    put("discharge", "B", 0)
    put("heating", "B", 1)
    if layout == "32s":
        for offset, value in zip((258, 256, 254), t345, strict=True):
            struct.pack_into("<h", frame, offset, value)
    return _finish(frame)


def device_info(software: str = "11.XW", hardware: str = "11.XA") -> bytes:
    frame = bytearray(300)
    frame[0:6] = bytes.fromhex("55AAEB9003") + b"\x01"
    frame[6:22] = b"JK_B2A24S15P".ljust(16, b"\x00")
    frame[22:30] = hardware.encode().ljust(8, b"\x00")
    frame[30:38] = software.encode().ljust(8, b"\x00")
    struct.pack_into("<I", frame, 38, 1_234_567)
    frame[46:62] = b"House bank".ljust(16, b"\x00")
    frame[78:86] = b"230415".ljust(8, b"\x00")
    frame[86:97] = b"3052123456X"
    return _finish(frame)


# -- device info and layout selection ---------------------------------------------------------------


def test_device_info_fields() -> None:
    snapshot = decode(JK, [device_info(), cell_info()], timestamp=0.0)
    device = snapshot.device
    assert device.manufacturer == "Jikong"
    assert device.model == "JK_B2A24S15P"
    assert device.hardware_version == "11.XA"
    assert device.software_version == "11.XW"
    assert device.name == "House bank"
    assert device.production_date == dt.date(2023, 4, 15)
    assert device.serial_number == "3052123456X"
    assert snapshot.extras["uptime"] == 1_234_567


@pytest.mark.parametrize(("software", "layout"), [("10.XW", "24s"), ("11.XW", "32s"), ("19.12", "32s")])
def test_software_version_selects_layout(software: str, layout: str) -> None:
    snapshot = decode(JK, [device_info(software), cell_info(layout)], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(52.912)
    assert snapshot.cell_count == 16
    assert JK.variant_for(JK.variables_of([device_info(software)])) == f"jk02_{layout}"


def test_without_device_info_the_32s_layout_is_assumed() -> None:
    assert decode(JK, [cell_info("32s")], timestamp=0.0).voltage == pytest.approx(52.912)


def test_variant_can_be_forced() -> None:
    snapshot = decode(JK, [cell_info("24s")], timestamp=0.0, variant="jk02_24s")
    assert snapshot.voltage == pytest.approx(52.912)
    with pytest.raises(ValueError, match="unknown variant"):
        decode(JK, [cell_info("24s")], timestamp=0.0, variant="jk04")


# -- every cell-info field -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["24s", "32s"])
def test_every_cell_info_field(layout: str) -> None:
    software = "10.XW" if layout == "24s" else "14.20"
    snapshot = decode(
        JK, [device_info(software), cell_info(layout, t345=(180, -2000, 190))], battery_id="jk", timestamp=0.0
    )
    assert snapshot.cell_voltages == pytest.approx([3.300 + index / 1000 for index in range(16)])
    assert snapshot.voltage == pytest.approx(52.912)
    assert snapshot.current == pytest.approx(-10.0)
    assert snapshot.power == pytest.approx(-529.12)  # V·I, signed, not the unsigned power field
    assert snapshot.mosfet_temperature == pytest.approx(31.2)
    expected_temperatures = [21.5, -3.5] + ([18.0, 19.0] if layout == "32s" else [])
    assert snapshot.temperatures == pytest.approx(expected_temperatures)
    assert snapshot.balance_current == pytest.approx(-0.25)
    assert snapshot.balancing is True
    assert snapshot.soc == 77
    assert snapshot.remaining_capacity == pytest.approx(215.6)
    assert snapshot.full_capacity == pytest.approx(280.0)
    assert snapshot.cycles == 42
    assert snapshot.soh == 99
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is False
    assert snapshot.heating is True
    assert snapshot.alarms == frozenset()
    extras = snapshot.extras
    assert extras["cell_average"] == pytest.approx(3.307)
    assert extras["cell_delta"] == pytest.approx(0.015)
    assert extras["cell_max_number"] == 16
    assert extras["cell_min_number"] == 1
    assert extras["power"] == pytest.approx(529.12)
    assert extras["balancing_action"] == "charging"
    assert extras["total_cycle_capacity"] == pytest.approx(11_760.0)
    assert extras["total_runtime"] == 3_456_789
    assert [extras[f"cell_wire_resistance_{n}"] for n in range(1, 17)] == pytest.approx(
        [0.060 + index / 1000 for index in range(16)]
    )
    assert "cell_wire_resistance_17" not in extras


@pytest.mark.parametrize(("action", "name", "balancing"), [(0, "off", False), (2, "discharging", True)])
def test_balancing_action(action: int, name: str, balancing: bool) -> None:
    snapshot = decode(JK, [cell_info(action=action)], timestamp=0.0)
    assert snapshot.extras["balancing_action"] == name
    assert snapshot.balancing is balancing


def test_cell_count_comes_from_the_enabled_cell_mask() -> None:
    cells = [3200 + index for index in range(24)]
    snapshot = decode(JK, [device_info("10.XW"), cell_info("24s", cells=cells)], timestamp=0.0)
    assert snapshot.cell_count == 24
    snapshot = decode(JK, [cell_info("32s", cells=[3300] * 32)], timestamp=0.0)
    assert snapshot.cell_count == 32


def test_temperatures_3_to_5_need_software_14() -> None:
    frames = [device_info("13.XW"), cell_info("32s", t345=(180, 181, 182))]
    assert decode(JK, frames, timestamp=0.0).temperatures == pytest.approx([21.5, -3.5])
    frames = [device_info("14.XW"), cell_info("32s", t345=(180, 181, 182))]
    assert decode(JK, frames, timestamp=0.0).temperatures == pytest.approx([21.5, -3.5, 18.0, 18.1, 18.2])
    frames = [device_info("14.XW"), cell_info("32s", t345=(-2000, -2000, -2000))]
    assert decode(JK, frames, timestamp=0.0).temperatures == pytest.approx([21.5, -3.5])


JK_ALARM_BITS = {
    0: Alarm.WIRE_RESISTANCE,
    1: Alarm.MOSFET_OVERTEMPERATURE,
    2: Alarm.CELL_COUNT_MISMATCH,
    4: Alarm.BATTERY_FULL,
    5: Alarm.PACK_OVERVOLTAGE,
    6: Alarm.CHARGE_OVERCURRENT,
    7: Alarm.CHARGE_SHORT_CIRCUIT,
    8: Alarm.CHARGE_OVERTEMPERATURE,
    9: Alarm.CHARGE_UNDERTEMPERATURE,
    10: Alarm.INTERNAL_COMMUNICATION_FAULT,
    11: Alarm.CELL_UNDERVOLTAGE,
    12: Alarm.PACK_UNDERVOLTAGE,
    13: Alarm.DISCHARGE_OVERCURRENT,
    14: Alarm.DISCHARGE_SHORT_CIRCUIT,
    15: Alarm.DISCHARGE_OVERTEMPERATURE,
    16: Alarm.CHARGE_MOSFET_FAULT,
    17: Alarm.DISCHARGE_MOSFET_FAULT,
    18: Alarm.SYSTEM_FAULT,
    20: Alarm.DISCHARGE_MOSFET_FAULT,
    21: Alarm.BATTERY_OVERTEMPERATURE,
    22: Alarm.TEMPERATURE_SENSOR_FAULT,
    23: Alarm.SYSTEM_FAULT,
    24: Alarm.SHORT_CIRCUIT,
    25: Alarm.DISCHARGE_OVERCURRENT,
    26: Alarm.DISCHARGE_OVERCURRENT,
    27: Alarm.DISCHARGE_UNDERTEMPERATURE,
    28: Alarm.MOSFET_SOFTWARE_LOCK,
}
"""The JK02 error bits as esphome-jk-bms names them (DEFAULT_ERRORS_JK02); bit 3 is unnamed there."""


@pytest.mark.parametrize(("bit", "alarm"), sorted(JK_ALARM_BITS.items()))
def test_every_alarm_bit_32s(bit: int, alarm: Alarm) -> None:
    assert decode(JK, [cell_info("32s", alarms=1 << bit)], timestamp=0.0).alarms == {alarm}


@pytest.mark.parametrize(("bit", "alarm"), sorted((b, a) for b, a in JK_ALARM_BITS.items() if b < 16))
def test_every_alarm_bit_24s(bit: int, alarm: Alarm) -> None:
    snapshot = decode(JK, [device_info("10.XW"), cell_info("24s", alarms=1 << bit)], timestamp=0.0)
    assert snapshot.alarms == {alarm}


def test_unassigned_alarm_bits_raise_nothing() -> None:
    spare = (1 << 3) | (1 << 19) | (1 << 29) | (1 << 30) | (1 << 31)
    assert decode(JK, [cell_info("32s", alarms=spare)], timestamp=0.0).alarms == frozenset()


# -- framing quirks ------------------------------------------------------------------------------------


def _assemble(chunks: list[bytes]) -> list[Any]:
    assembler = JK.new_assembler()
    frames = []
    for chunk in chunks:
        frames += assembler.feed(chunk)
    return frames


def test_320_byte_frames_are_accepted() -> None:
    frame = cell_info() + bytes(range(20))
    assert JK.check_frame(frame).raw == cell_info()
    frames = _assemble([frame[:128], frame[128:256], frame[256:]])
    assert [f.raw for f in frames] == [cell_info()]


def test_ack_glued_onto_the_device_info_frame() -> None:
    glued = device_info() + ACK
    assert JK.check_frame(glued).key == 0x03
    frames = _assemble([glued[:128], glued[128:256], glued[256:], cell_info()])
    assert [frame.key for frame in frames] == [0x03, 0x02]


def test_at_noise_and_ack_chunks_are_filtered_even_mid_frame() -> None:
    frame = cell_info()
    frames = _assemble([b"AT\r\n", ACK, frame[:100], b"AT\r\n", ACK, frame[100:200], b"AT\r\n", frame[200:]])
    assert [f.raw for f in frames] == [frame]


def test_wrong_checksum_is_a_frame_error() -> None:
    frame = bytearray(cell_info())
    frame[299] ^= 0xFF
    with pytest.raises(FrameError, match="checksum"):
        JK.check_frame(bytes(frame))


# -- requests and writes -------------------------------------------------------------------------------


def test_requests_match_the_documented_bytes() -> None:
    frames = {request.name: request.frame for request in JK.requests}
    assert frames["device_info"] == bytes.fromhex("AA5590EB97" + "00" * 14 + "11")
    assert frames["cell_info"] == bytes.fromhex("AA5590EB96" + "00" * 14 + "10")
    device, cells = JK.requests
    assert device.when == "connect"
    assert cells.streaming


@pytest.mark.parametrize(
    ("command", "kwargs", "register", "value"),
    [
        ("set_charge_fet", {"charge": True, "discharge": None}, 0x1D, 1),
        ("set_charge_fet", {"charge": False, "discharge": None}, 0x1D, 0),
        ("set_discharge_fet", {"charge": None, "discharge": True}, 0x1E, 1),
        ("set_discharge_fet", {"charge": None, "discharge": False}, 0x1E, 0),
    ],
)
def test_mosfet_writes(command: str, kwargs: dict[str, bool | None], register: int, value: int) -> None:
    frame = JK.build_command(command, **kwargs)
    assert len(frame) == 20
    assert frame[:6] == bytes([0xAA, 0x55, 0x90, 0xEB, register, 0x04])
    assert struct.unpack_from("<I", frame, 6)[0] == value
    assert frame[19] == sum(frame[:19]) & 0xFF


# -- against the simulator -----------------------------------------------------------------------------


async def test_client_handshake_streaming_and_writes() -> None:
    transport = SimulatorTransport(JK, PackConfig(cells=20, ntc_count=2), notification_size=128)
    transport.bms.stream_interval = 0.05
    async with BatteryClient(JK, transport, battery_id="jk") as client:
        first = await client.read()
        assert first.cell_count == 20
        assert first.device.software_version == "14.20"
        writes = len(transport.writes)
        second = await client.read()
        # Device info is asked once per connection, cell info is streamed: no further writes.
        assert len(transport.writes) == writes
        assert second.cell_count == 20
        switched = await client.set_mosfets(charge=False)
        assert switched.charge_enabled is False
        assert transport.writes[-1][4] == 0x1D
        await asyncio.sleep(0)


def test_cli_decode_with_device_info_and_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "-p", "jk", device_info("10.XW").hex(), cell_info("24s").hex()]) == 0
    assert json.loads(capsys.readouterr().out)["voltage"] == pytest.approx(52.912)
    assert main(["decode", "-p", "jk", "--variant", "jk02_24s", cell_info("24s").hex()]) == 0
    assert json.loads(capsys.readouterr().out)["cell_count"] == 16
    assert main(["decode", "-p", "jk", "--variant", "nope", cell_info().hex()]) == 2
    assert "--variant" in capsys.readouterr().err

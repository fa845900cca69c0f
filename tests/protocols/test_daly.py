"""Daly over BLE: the Modbus flavour (``daly``) and the legacy A5 protocol (``daly-a5``), field by field.

Frames are built here from the layouts in daly.md (Modbus data offsets; A5 commands 0x90-0x98), not by
the engine's encoder, so a wrong offset in the definitions shows up as a wrong value.
"""

from __future__ import annotations

import struct

import pytest

from bmsgate.errors import DecodeError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus
from bmsgate.runtime.client import BatteryClient
from bmsgate.runtime.simulation import PackConfig
from bmsgate.transports.simulator import SimulatorTransport

DALY = get_protocol("daly")
A5 = get_protocol("daly-a5")


def modbus_reply(data: bytes) -> bytes:
    frame = bytes([0xD2, 0x03, len(data)]) + data
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def status(*, faults: tuple[int, int, int, int] = (0, 0, 0, 0), cells: int = 16, sensors: int = 3) -> bytes:
    data = bytearray(124)
    for index in range(cells):
        struct.pack_into(">H", data, 2 * index, 3300 + index)
    for index in range(sensors):
        struct.pack_into(">H", data, 64 + 2 * index, 40 + 20 + index)  # 20, 21, 22 °C
    struct.pack_into(">H", data, 80, 528)  # 52.8 V
    struct.pack_into(">H", data, 82, 30000 - 125)  # -12.5 A (discharging)
    struct.pack_into(">H", data, 84, 765)  # 76.5 %
    struct.pack_into(">H", data, 96, 1530)  # 153.0 Ah
    struct.pack_into(">H", data, 98, cells)
    struct.pack_into(">H", data, 100, sensors)
    struct.pack_into(">H", data, 102, 321)
    struct.pack_into(">H", data, 104, 1)
    struct.pack_into(">H", data, 106, 1)
    struct.pack_into(">H", data, 108, 0)
    struct.pack_into(">H", data, 112, 15)
    struct.pack_into(">4H", data, 116, *faults)
    return modbus_reply(bytes(data))


def mosfet(raw: int) -> bytes:
    data = bytearray(18)
    struct.pack_into(">H", data, 8, raw)
    return modbus_reply(bytes(data))


def device() -> bytes:
    data = bytearray(64)
    data[0:16] = b"SW-V1.2.3".ljust(16, b"\x00")
    data[16:32] = b"HW-DL16S-100A".ljust(16, b"\x00")
    return modbus_reply(bytes(data))


# -- Modbus flavour ------------------------------------------------------------------------------------


def test_requests_are_the_documented_modbus_reads() -> None:
    frames = {request.name: request.frame for request in DALY.requests}
    assert frames["status"] == bytes.fromhex("D203 0000 003E D7B9")
    assert frames["mosfet_temperature"][:6] == bytes.fromhex("D203 003E 0009")
    assert frames["device_info"][:6] == bytes.fromhex("D203 00A9 0020")
    for frame in frames.values():
        assert crc16_modbus(frame[:-2]).to_bytes(2, "little") == frame[-2:]


def test_every_status_field() -> None:
    snapshot = decode(DALY, [device(), mosfet(40 + 35), status()], timestamp=0.0)
    assert snapshot.cell_voltages == pytest.approx([3.3 + index / 1000 for index in range(16)])
    assert snapshot.temperatures == pytest.approx([20.0, 21.0, 22.0])
    assert snapshot.voltage == pytest.approx(52.8)
    assert snapshot.current == pytest.approx(-12.5)
    assert snapshot.soc == pytest.approx(76.5)
    assert snapshot.remaining_capacity == pytest.approx(153.0)
    assert snapshot.cycles == 321
    assert snapshot.balancing is True
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is False
    assert snapshot.extras["cell_delta"] == pytest.approx(0.015)
    assert snapshot.mosfet_temperature == pytest.approx(35.0)
    assert snapshot.device.software_version == "SW-V1.2.3"
    assert snapshot.device.hardware_version == "HW-DL16S-100A"
    assert snapshot.alarms == frozenset()


def test_replies_are_told_apart_by_their_byte_count() -> None:
    assert [DALY.check_frame(frame).key for frame in (status(), mosfet(60), device())] == [0x7C, 0x12, 0x40]


@pytest.mark.parametrize("raw", [0x0000, 0xFFFF])
def test_invalid_mosfet_temperature_is_absent(raw: int) -> None:
    assert decode(DALY, [mosfet(raw), status()], timestamp=0.0).mosfet_temperature is None


def test_charging_current_is_positive() -> None:
    frame = bytearray(status()[3:-2])
    struct.pack_into(">H", frame, 82, 30000 + 57)
    assert decode(DALY, [modbus_reply(bytes(frame))], timestamp=0.0).current == pytest.approx(5.7)


DALY_FAULTS: list[tuple[int, int, Alarm]] = [
    *(
        (0, bit, alarm)
        for bit, alarm in enumerate(
            [Alarm.CELL_OVERVOLTAGE] * 2
            + [Alarm.CELL_UNDERVOLTAGE] * 2
            + [Alarm.PACK_OVERVOLTAGE] * 2
            + [Alarm.PACK_UNDERVOLTAGE] * 2
            + [Alarm.CHARGE_OVERTEMPERATURE] * 2
            + [Alarm.CHARGE_UNDERTEMPERATURE] * 2
            + [Alarm.DISCHARGE_OVERTEMPERATURE] * 2
            + [Alarm.DISCHARGE_UNDERTEMPERATURE] * 2
        )
    ),
    *(
        (1, bit, alarm)
        for bit, alarm in enumerate(
            [Alarm.CHARGE_OVERCURRENT] * 2
            + [Alarm.DISCHARGE_OVERCURRENT] * 2
            + [Alarm.BATTERY_FULL] * 2
            + [Alarm.LOW_SOC] * 2
            + [Alarm.CELL_IMBALANCE] * 2
        )
    ),
    *(
        (2, bit, alarm)
        for bit, alarm in enumerate(
            [Alarm.MOSFET_OVERTEMPERATURE] * 2
            + [Alarm.TEMPERATURE_SENSOR_FAULT] * 2
            + [Alarm.CHARGE_MOSFET_FAULT, Alarm.DISCHARGE_MOSFET_FAULT] * 2
            + [Alarm.FRONT_END_FAULT] * 2
            + [Alarm.TEMPERATURE_SENSOR_FAULT]
            + [Alarm.SYSTEM_FAULT] * 3
            + [Alarm.INTERNAL_COMMUNICATION_FAULT] * 2
        )
    ),
]


@pytest.mark.parametrize(("register", "bit", "alarm"), DALY_FAULTS)
def test_every_fault_bit(register: int, bit: int, alarm: Alarm) -> None:
    faults = [0, 0, 0, 0]
    faults[register] = 1 << bit
    assert decode(DALY, [status(faults=(faults[0], faults[1], faults[2], faults[3]))], timestamp=0.0).alarms == {alarm}


def test_temperature_difference_raises_no_alarm() -> None:
    snapshot = decode(DALY, [status(faults=(0, 0b1100_0000_0000, 0, 0))], timestamp=0.0)
    assert snapshot.alarms == frozenset()


@pytest.mark.parametrize("bit", range(16))
def test_fault_register_0x3d_is_a_problem_and_kept_raw(bit: int) -> None:
    snapshot = decode(DALY, [status(faults=(0, 0, 0, 1 << bit))], timestamp=0.0)
    assert snapshot.alarms == {Alarm.SYSTEM_FAULT}
    assert snapshot.extras["fault_code"] == 1 << bit


async def test_simulated_daly_poll() -> None:
    transport = SimulatorTransport(DALY, PackConfig(cells=24, ntc_count=4))
    async with BatteryClient(DALY, transport) as client:
        snapshot = await client.read()
    assert snapshot.cell_count == 24
    assert len(snapshot.temperatures) == 4
    assert snapshot.mosfet_temperature is not None


# -- legacy A5 -----------------------------------------------------------------------------------------


def a5(command: int, data: bytes) -> bytes:
    frame = bytes([0xA5, 0x01, command, 0x08]) + data.ljust(8, b"\x00")
    return frame + bytes([sum(frame) & 0xFF])


def a5_poll(cells: list[int], temperatures: list[int], *, failures: bytes = bytes(8)) -> list[bytes]:
    frames = [
        a5(0x90, struct.pack(">HHHH", 532, 531, 30000 - 84, 555)),  # charging 8.4 A
        a5(
            0x91, struct.pack(">HBHB", max(cells), cells.index(max(cells)) + 1, min(cells), cells.index(min(cells)) + 1)
        ),
        a5(0x92, bytes([40 + 25, 2, 40 + 19, 1])),
        a5(0x93, bytes([1, 1, 0, 17]) + struct.pack(">I", 61_250)),
        a5(0x94, bytes([len(cells), len(temperatures), 1, 0, 0x05]) + struct.pack(">H", 222)),
    ]
    for number, first in enumerate(range(0, len(cells), 3), start=1):
        chunk = cells[first : first + 3]
        frames.append(a5(0x95, bytes([number]) + struct.pack(f">{len(chunk)}H", *chunk)))
    for number, first in enumerate(range(0, len(temperatures), 7), start=1):
        chunk = temperatures[first : first + 7]
        frames.append(a5(0x96, bytes([number]) + bytes(40 + t for t in chunk)))
    frames.append(a5(0x97, bytes([0b0000_0101, 0, 0, 0, 0, 0b10])))
    frames.append(a5(0x98, failures))
    return frames


def test_a5_requests_have_the_documented_form() -> None:
    for request in A5.requests:
        frame = request.frame
        assert len(frame) == 13
        assert frame[:2] == b"\xa5\x80"
        assert frame[3] == 8
        assert frame[12] == sum(frame[:12]) & 0xFF


def test_a5_every_field() -> None:
    cells = [3300 + index for index in range(16)]
    snapshot = decode(A5, a5_poll(cells, [21, 22, 23]), timestamp=0.0)
    assert snapshot.voltage == pytest.approx(53.2)
    assert snapshot.current == pytest.approx(8.4)
    assert snapshot.soc == pytest.approx(55.5)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is False
    assert snapshot.remaining_capacity == pytest.approx(61.25)
    assert snapshot.cycles == 222
    assert snapshot.cell_voltages == pytest.approx([value / 1000 for value in cells])
    assert snapshot.temperatures == pytest.approx([21.0, 22.0, 23.0])
    assert snapshot.balancing_cells == (1, 3, 42)
    extras = snapshot.extras
    assert extras["gathered_voltage"] == pytest.approx(53.1)
    assert extras["cell_max"] == pytest.approx(3.315)
    assert extras["cell_max_number"] == 16
    assert extras["cell_min"] == pytest.approx(3.3)
    assert extras["cell_min_number"] == 1
    assert extras["temperature_max"] == 25
    assert extras["temperature_min_sensor"] == 1
    assert extras["state"] == "charging"
    assert extras["bms_life"] == 17
    assert extras["charger_connected"] is True
    assert extras["load_connected"] is False
    assert extras["dio_states"] == 5


def test_a5_cell_frames_are_placed_by_their_number_not_their_order() -> None:
    cells = [3000 + 10 * index for index in range(10)]
    frames = a5_poll(cells, [20])
    cell_frames = [frame for frame in frames if frame[2] == 0x95]
    shuffled = [frame for frame in frames if frame[2] != 0x95] + cell_frames[::-1]
    assert decode(A5, shuffled, timestamp=0.0).cell_voltages == pytest.approx([v / 1000 for v in cells])


def test_a5_missing_cell_frame_is_a_decode_error() -> None:
    frames = [frame for frame in a5_poll([3300] * 8, [20]) if not (frame[2] == 0x95 and frame[4] == 2)]
    with pytest.raises(DecodeError, match="cell_voltages item 4 is missing"):
        decode(A5, frames, timestamp=0.0)


def test_a5_frames_needed_follow_the_cell_count() -> None:
    variables = A5.variables_of(a5_poll([3300] * 16, [20] * 9))
    assert A5.frames_expected(0x95, variables) == 6
    assert A5.frames_expected(0x96, variables) == 2
    assert A5.frames_expected(0x90, variables) == 1
    assert A5.frames_expected(0x95, {}) is None


@pytest.mark.parametrize(
    ("byte", "bit", "alarm"),
    [
        (0, 0, Alarm.CELL_OVERVOLTAGE),
        (0, 3, Alarm.CELL_UNDERVOLTAGE),
        (0, 5, Alarm.PACK_OVERVOLTAGE),
        (0, 7, Alarm.PACK_UNDERVOLTAGE),
        (1, 0, Alarm.CHARGE_OVERTEMPERATURE),
        (1, 2, Alarm.CHARGE_UNDERTEMPERATURE),
        (1, 4, Alarm.DISCHARGE_OVERTEMPERATURE),
        (1, 6, Alarm.DISCHARGE_UNDERTEMPERATURE),
        (2, 1, Alarm.CHARGE_OVERCURRENT),
        (2, 3, Alarm.DISCHARGE_OVERCURRENT),
        (2, 4, Alarm.BATTERY_FULL),
        (2, 7, Alarm.LOW_SOC),
        (3, 0, Alarm.CELL_IMBALANCE),
        (4, 0, Alarm.MOSFET_OVERTEMPERATURE),
        (4, 3, Alarm.TEMPERATURE_SENSOR_FAULT),
        (4, 4, Alarm.CHARGE_MOSFET_FAULT),
        (4, 7, Alarm.DISCHARGE_MOSFET_FAULT),
        (5, 0, Alarm.FRONT_END_FAULT),
        (5, 3, Alarm.SYSTEM_FAULT),
        (5, 7, Alarm.INTERNAL_COMMUNICATION_FAULT),
        (6, 0, Alarm.CURRENT_SENSOR_FAULT),
        (6, 1, Alarm.FRONT_END_FAULT),
        (6, 2, Alarm.SHORT_CIRCUIT),
        (6, 3, Alarm.CELL_UNDERVOLTAGE),
    ],
)
def test_a5_failure_bits(byte: int, bit: int, alarm: Alarm) -> None:
    failures = bytearray(8)
    failures[byte] = 1 << bit
    assert decode(A5, a5_poll([3300] * 4, [20], failures=bytes(failures)), timestamp=0.0).alarms == {alarm}


async def test_a5_simulated_poll_collects_every_numbered_frame() -> None:
    transport = SimulatorTransport(A5, PackConfig(cells=17, ntc_count=8))
    async with BatteryClient(A5, transport) as client:
        snapshot = await client.read()
    assert snapshot.cell_count == 17
    assert len(snapshot.temperatures) == 8  # two numbered frames (7 + 1)


async def test_a5_several_frames_in_one_notification() -> None:
    # A UART bridge may pack several 13-byte frames into one notification: none may be lost.
    transport = SimulatorTransport(A5, PackConfig(cells=16, ntc_count=2), notification_size=100)
    original = transport.bms.replies_for

    def glued(key: int) -> list[bytes]:
        return [b"".join(original(key))]

    transport.bms.replies_for = glued  # type: ignore[method-assign]
    async with BatteryClient(A5, transport) as client:
        snapshot = await client.read()
    assert snapshot.cell_count == 16

"""JBD decoding against the real frames in shared/protocols/jbd.md.

Sources of the frames (as noted there): the vendor's "General Protocol V4" document (17S and 15S
examples) and a capture of a JBD-SP04S034 4S pack.
"""

from __future__ import annotations

import datetime as dt

import pytest

from bmsgate.errors import DecodeError, FrameError, ProtocolError
from bmsgate.model import Alarm
from bmsgate.protocols import decode, decode_hex_frames, get_protocol

JBD = get_protocol("jbd")

VENDOR_17S_BASIC = "DD03001F19DFF8240DA50FA00002249100000000000012570311040B980BA90B960B97F89A77"
VENDOR_17S_CELLS = "DD0400220EC80EC80ECB0ECF0ECA0EC70ECA0ECD0EC90ECA0ECB0ECB0EC80ECC0EC80EC90EC9F18777"
VENDOR_15S_BASIC = "DD03001B1700000002D003E8000020780000000000001048030F020B760B82FBFF77"
VENDOR_15S_CELLS = "DD04001E0F660F630F630F640F3E0F630F370F5B0F650F3B0F630F630F3C0F660F3DF9F977"
CAPTURE_4S_BASIC = "DD03001D0618000001F201F400002C7C00000000000080640304030B8B0B8A0B84FA8D77"
CAPTURE_4S_CELLS = "DD0400080F450F3D0F370F3DFEC677"


def _decode(*frames: str):  # type: ignore[no-untyped-def]
    return decode(JBD, [bytes.fromhex(frame) for frame in frames], battery_id="test", timestamp=0.0)


def test_vendor_17s_pack() -> None:
    snapshot = _decode(VENDOR_17S_BASIC, VENDOR_17S_CELLS)
    assert snapshot.voltage == pytest.approx(66.23)
    assert snapshot.current == pytest.approx(-20.12)
    assert snapshot.remaining_capacity == pytest.approx(34.93)
    assert snapshot.full_capacity == pytest.approx(40.00)
    assert snapshot.cycles == 2
    assert snapshot.device.production_date == dt.date(2018, 4, 17)
    assert snapshot.device.software_version == "1.2"
    assert snapshot.soc == 87
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.cell_count == 17
    assert snapshot.temperatures == pytest.approx((23.7, 25.4, 23.5, 23.6))
    # jbd.md summarises this frame as "3.784 to 3.791 V", but cell 6 is 0x0EC7 = 3783 mV in the
    # frame itself; the bytes are the authority, the summary is off by one millivolt.
    assert min(snapshot.cell_voltages) == pytest.approx(3.783)
    assert snapshot.cell_min is not None and snapshot.cell_min.cell == 6
    assert max(snapshot.cell_voltages) == pytest.approx(3.791)
    assert snapshot.cell_max is not None and snapshot.cell_max.cell == 4
    assert snapshot.alarms == frozenset()
    assert snapshot.balancing_cells == ()
    assert snapshot.power == pytest.approx(66.23 * -20.12)


def test_vendor_15s_pack() -> None:
    snapshot = _decode(VENDOR_15S_BASIC, VENDOR_15S_CELLS)
    assert snapshot.voltage == pytest.approx(58.88)
    assert snapshot.current == 0
    assert snapshot.remaining_capacity == pytest.approx(7.20)
    assert snapshot.full_capacity == pytest.approx(10.00)
    assert snapshot.device.production_date == dt.date(2016, 3, 24)
    assert snapshot.device.software_version == "1.0"
    assert snapshot.soc == 72
    assert snapshot.temperatures == pytest.approx((20.3, 21.5))
    assert snapshot.cell_count == 15
    assert min(snapshot.cell_voltages) == pytest.approx(3.895)
    assert max(snapshot.cell_voltages) == pytest.approx(3.942)


def test_captured_4s_pack() -> None:
    snapshot = _decode(CAPTURE_4S_BASIC, CAPTURE_4S_CELLS)
    assert snapshot.voltage == pytest.approx(15.60)
    assert snapshot.current == 0
    assert snapshot.remaining_capacity == pytest.approx(4.98)
    assert snapshot.full_capacity == pytest.approx(5.00)
    assert snapshot.cycles == 0
    assert snapshot.soc == 100
    assert (snapshot.charge_enabled, snapshot.discharge_enabled) == (True, True)
    assert snapshot.temperatures == pytest.approx((22.4, 22.3, 21.7))
    assert snapshot.cell_voltages == pytest.approx((3.909, 3.901, 3.895, 3.901))
    assert snapshot.cell_min is not None and snapshot.cell_min.cell == 3
    assert snapshot.cell_max is not None and snapshot.cell_max.cell == 1
    assert snapshot.cell_delta == pytest.approx(0.014)


def test_frames_in_any_order_give_the_same_snapshot() -> None:
    forward = _decode(VENDOR_17S_BASIC, VENDOR_17S_CELLS)
    backward = _decode(VENDOR_17S_CELLS, VENDOR_17S_BASIC)
    assert forward.to_dict() == backward.to_dict()


def test_every_protection_bit_maps_to_a_named_alarm() -> None:
    expected = [
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
        Alarm.SYSTEM_FAULT,  # 13: charge timeout close (esphome-jbd-bms)
        Alarm.SYSTEM_FAULT,  # 14, 15: unnamed there; still a protection that opened a MOSFET
        Alarm.SYSTEM_FAULT,
    ]
    base = bytearray(bytes.fromhex(CAPTURE_4S_BASIC)[4:-3])
    for bit, alarm in enumerate(expected):
        payload = bytearray(base)
        payload[16:18] = (1 << bit).to_bytes(2, "big")
        frame = _frame(0x03, bytes(payload))
        assert decode(JBD, [frame], timestamp=0).alarms == {alarm}, bit
    assert JBD.possible_alarms == frozenset(expected)


def test_timeout_protection_bits_are_a_system_fault() -> None:
    payload = bytearray(bytes.fromhex(CAPTURE_4S_BASIC)[4:-3])
    payload[16:18] = (0b111 << 13).to_bytes(2, "big")
    assert decode(JBD, [_frame(0x03, bytes(payload))], timestamp=0).alarms == {Alarm.SYSTEM_FAULT}


@pytest.mark.parametrize("cell", [1, 2, 9, 16, 17, 24, 32])
def test_balance_bits_cover_32_cells(cell: int) -> None:
    payload = bytearray(bytes.fromhex(CAPTURE_4S_BASIC)[4:-3])
    low = (1 << (cell - 1)) if cell <= 16 else 0
    high = (1 << (cell - 17)) if cell > 16 else 0
    payload[12:14] = low.to_bytes(2, "big")
    payload[14:16] = high.to_bytes(2, "big")
    snapshot = decode(JBD, [_frame(0x03, bytes(payload))], timestamp=0)
    assert snapshot.balancing_cells == (cell,)
    assert snapshot.balancing_active is True


@pytest.mark.parametrize(("fet", "charge", "discharge"), [(0, False, False), (1, True, False), (2, False, True)])
def test_fet_bits(fet: int, charge: bool, discharge: bool) -> None:
    payload = bytearray(bytes.fromhex(CAPTURE_4S_BASIC)[4:-3])
    payload[20] = fet
    snapshot = decode(JBD, [_frame(0x03, bytes(payload))], timestamp=0)
    assert (snapshot.charge_enabled, snapshot.discharge_enabled) == (charge, discharge)


def test_extra_bytes_after_the_ntcs_are_tolerated() -> None:
    payload = bytes.fromhex(CAPTURE_4S_BASIC)[4:-3] + bytes.fromhex("00 11 22 33 44")
    snapshot = decode(JBD, [_frame(0x03, payload)], timestamp=0)
    assert snapshot.temperatures == pytest.approx((22.4, 22.3, 21.7))
    assert snapshot.voltage == pytest.approx(15.60)


def test_basic_info_too_short_for_its_ntcs_is_a_decode_error() -> None:
    payload = bytes.fromhex(CAPTURE_4S_BASIC)[4:-3][:-2]  # claims 3 NTCs, carries 2
    with pytest.raises(DecodeError, match="payload bytes"):
        decode(JBD, [_frame(0x03, payload)], timestamp=0)


def test_basic_info_shorter_than_the_fixed_fields_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="needs at least 23"):
        decode(JBD, [_frame(0x03, bytes(10))], timestamp=0)


def test_hardware_version_reply_gives_the_model() -> None:
    model = b"JBD-SP04S034-L4S-200A-B-U"
    snapshot = decode(JBD, [_frame(0x05, model), bytes.fromhex(CAPTURE_4S_BASIC)], timestamp=0)
    assert snapshot.device.model == "JBD-SP04S034-L4S-200A-B-U"
    assert snapshot.device.manufacturer == "Jiabaida"


def test_error_status_is_a_protocol_error() -> None:
    frame = bytearray(_frame(0x03, bytes.fromhex(CAPTURE_4S_BASIC)[4:-3]))
    frame[2] = 0x80
    checksum = (0x10000 - sum(frame[2:-3])) & 0xFFFF
    frame[-3:-1] = checksum.to_bytes(2, "big")
    with pytest.raises(ProtocolError, match="error status"):
        decode(JBD, [bytes(frame)], timestamp=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DE03001D0618", "does not start with DD"),
        (CAPTURE_4S_BASIC[:-2] + "78", "does not end with 77"),
        (CAPTURE_4S_BASIC[:-6] + "FA8E77", "checksum mismatch"),
        (CAPTURE_4S_BASIC[:-8], "length field announces"),
        ("zz", "not a hex digit"),
        ("ABC", "even number of hex digits"),
    ],
)
def test_malformed_hex_frames_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_hex_frames(JBD, [text])


def test_request_frames_match_the_verified_bytes() -> None:
    frames = {request.name: request.frame.hex().upper() for request in JBD.requests}
    assert frames == {
        "basic_info": "DDA50300FFFD77",
        "cell_voltages": "DDA50400FFFC77",
        "hardware_version": "DDA50500FFFB77",
    }


@pytest.mark.parametrize(
    ("charge", "discharge", "expected"),
    [
        (True, True, "DD5AE1020000FF1D77"),
        (False, True, "DD5AE1020001FF1C77"),
        (True, False, "DD5AE1020002FF1B77"),
        (False, False, "DD5AE1020003FF1A77"),
    ],
)
def test_mosfet_control_frames(charge: bool, discharge: bool, expected: str) -> None:
    assert JBD.build_command("set_mosfets", charge=charge, discharge=discharge).hex().upper() == expected


def _frame(register: int, payload: bytes) -> bytes:
    body = bytes([0x00, len(payload)]) + payload
    checksum = (0x10000 - sum(body)) & 0xFFFF
    return bytes([0xDD, register]) + body + checksum.to_bytes(2, "big") + b"\x77"


def test_impossible_soc_is_a_decode_error() -> None:
    payload = bytearray(bytes.fromhex(CAPTURE_4S_BASIC)[4:-3])
    payload[19] = 0xFF  # RSOC 255 %
    with pytest.raises(DecodeError, match="soc of 255 % is impossible"):
        decode(JBD, [_frame(0x03, bytes(payload))], timestamp=0)

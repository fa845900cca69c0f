"""Renogy (Modbus device 0x30): every field of the four replies.

Fixtures: captured replies of an RBT100LFP12-BT (4 cells) published with patman15/aiobmsble
(tests/bms/test_renogy_bms.py); the expected values are the ones stated there.
"""

from __future__ import annotations

import pytest

from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus

RENOGY = get_protocol("renogy")
CELLS = bytes.fromhex(
    "30034400040023002100210021000000000000000000000000000000000000000000000000000200aa00aa00000000000000"
    "0000000000000000000000000000000000000000002574"
)
IDENTITY = bytes.fromhex(
    "3003380000000000060000000000c83230323130353236000000000000000020202020202020205242543130304c465031322d"
    "4254202030313030552f"
)
PACK = bytes.fromhex("30030effaa008800017bb0000186a0000fe01e")
STATUS = bytes.fromhex("3003100000000000000000000000000000000096a1")


def _status(data: bytes) -> bytes:
    frame = bytes([0x30, 0x03, 0x10]) + data
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def test_requests_are_valid_modbus_reads() -> None:
    addresses = {request.name: request.frame[2:6].hex() for request in RENOGY.requests}
    assert addresses == {"identity": "13f0001c", "cells": "13880022", "pack": "13b20007", "status": "13ec0008"}
    for request in RENOGY.requests:
        assert crc16_modbus(request.frame[:-2]).to_bytes(2, "little") == request.frame[-2:]


def test_every_field_of_the_capture() -> None:
    snapshot = decode(RENOGY, [IDENTITY, CELLS, PACK, STATUS], timestamp=0.0)
    assert snapshot.current == pytest.approx(-0.86)
    assert snapshot.voltage == pytest.approx(13.6)
    assert snapshot.remaining_capacity == pytest.approx(97.2)
    assert snapshot.full_capacity == pytest.approx(100.0)
    assert snapshot.design_capacity == pytest.approx(100.0)
    assert snapshot.cycles == 15
    assert snapshot.cell_voltages == pytest.approx([3.5, 3.3, 3.3, 3.3])
    assert snapshot.temperatures == pytest.approx([17.0, 17.0])
    assert snapshot.soc is None  # not reported in these registers
    assert snapshot.charge_enabled is False
    assert snapshot.discharge_enabled is False
    assert snapshot.heating is False
    assert snapshot.device.serial_number == "20210526"
    assert snapshot.device.model == "RBT100LFP12-BT"
    assert snapshot.device.software_version == "0100"
    assert snapshot.extras == {
        "cell_voltage_alarms": 0,
        "cell_temperature_alarms": 0,
        "other_alarms": 0,
        "status_1": 0,
    }


def test_status_bits() -> None:
    snapshot = decode(RENOGY, [CELLS, PACK, _status(bytes(12) + b"\x00\x06\x20\x00")], timestamp=0.0)
    assert snapshot.charge_enabled is True
    assert snapshot.discharge_enabled is True
    assert snapshot.heating is True
    snapshot = decode(RENOGY, [CELLS, PACK, _status(bytes(range(1, 11)) + bytes(6))], timestamp=0.0)
    assert snapshot.extras["cell_voltage_alarms"] == 0x01020304
    assert snapshot.extras["cell_temperature_alarms"] == 0x05060708
    assert snapshot.extras["other_alarms"] == 0x090A

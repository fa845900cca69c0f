"""Renogy Pro (RNGRBP / RNGC): the cells and pack replies, every field, and what tells it from `renogy`.

Fixtures: the replies of a 4-cell Renogy Pro battery published with patman15/aiobmsble
(tests/bms/test_renogy_pro_bms.py); the expected values are the ones stated there (its design capacity
211 is the whole-Ah part of the 211.93 Ah the register holds).
"""

from __future__ import annotations

import pytest

from bmsgate.protocols import decode, get_protocol
from bmsgate.protocols.checksums import crc16_modbus

RENOGY_PRO = get_protocol("renogy-pro")
CELLS = bytes.fromhex(
    "3003440004002100210021002100000000000000000000000000000000000000000000000000030111010c0113000000000000"
    "0000000000000000000000000000000000000000654a"
)
PACK = bytes.fromhex("30030efff400850003304200033bda00063e33")


def test_requests_are_valid_modbus_reads() -> None:
    addresses = {request.name: request.frame[2:6].hex() for request in RENOGY_PRO.requests}
    assert addresses == {"cells": "13880022", "pack": "13b20007"}
    for request in RENOGY_PRO.requests:
        assert crc16_modbus(request.frame[:-2]).to_bytes(2, "little") == request.frame[-2:]


def test_every_field_of_the_capture() -> None:
    snapshot = decode(RENOGY_PRO, [CELLS, PACK], timestamp=0.0)
    assert snapshot.current == -1.2  # 0.1 A: `renogy`'s 0.01 A would read -0.12 A
    assert snapshot.voltage == 13.3
    assert snapshot.remaining_capacity == 208.962
    assert snapshot.full_capacity == 211.93
    assert snapshot.design_capacity == 211.93
    assert snapshot.cycles == 6
    assert snapshot.cell_voltages == (3.3, 3.3, 3.3, 3.3)
    assert snapshot.temperatures == (27.3, 26.8, 27.5)
    assert snapshot.cell_count == 4
    assert snapshot.power == pytest.approx(-15.96)


def test_the_same_frames_through_renogy_read_a_tenth_of_the_current() -> None:
    # Why Renogy Pro has its own definition: the register is the same, its unit is not.
    assert decode(get_protocol("renogy"), [CELLS, PACK], timestamp=0.0).current == pytest.approx(-0.12)


@pytest.mark.parametrize("name", ["RNGRBP12100", "RNGC12100"])
def test_advertisements_match_renogy_pro_not_renogy(name: str) -> None:
    for protocol, expected in ((RENOGY_PRO, True), (get_protocol("renogy"), False)):
        matched = protocol.definition.matches_advertisement(
            name=name, address="14:9C:EF:03:68:81", service_uuids=[], manufacturer_ids=[0xE14C]
        )
        assert matched is expected, protocol.name

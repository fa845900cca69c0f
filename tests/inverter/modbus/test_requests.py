"""Answering request PDUs from the register store (pure): every served function, its limits and refusals."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.inverter.modbus.registermap import RegisterKind, load_register_map
from bmsgate.inverter.modbus.requests import answer
from bmsgate.inverter.modbus.store import RegisterStore

HEARTBEAT_IN = 0x0117
"""The generic map's one writable holding register."""
SOC = 0x0100

Written = list[tuple[int, list[int]]]


@pytest.fixture
def store() -> tuple[RegisterStore, Written]:
    writes: Written = []
    register_store = RegisterStore(
        load_register_map("generic"), on_write=lambda address, values: writes.append((address, list(values)))
    )
    register_store.update({RegisterKind.HOLDING: {SOC: 50, SOC + 1: 5280}, RegisterKind.INPUT: {SOC: 51}})
    return register_store, writes


def test_reads_answer_the_values_of_the_table_the_function_reads(store: tuple[RegisterStore, Written]) -> None:
    register_store, _ = store
    assert answer(register_store, struct.pack(">BHH", 3, SOC, 2)) == bytes([3, 4, 0, 50, 0x14, 0xA0])
    assert answer(register_store, struct.pack(">BHH", 4, SOC, 1)) == bytes([4, 2, 0, 51])
    assert answer(register_store, struct.pack(">BHH", 3, 0x0010, 1)) == bytes([0x83, 2])  # not in the map
    assert answer(register_store, struct.pack(">BHH", 3, 0x011F, 2)) == bytes([0x83, 2])  # runs off its end
    assert answer(register_store, struct.pack(">BHH", 3, SOC, 0)) == bytes([0x83, 3])
    assert answer(register_store, struct.pack(">BHH", 3, SOC, 126)) == bytes([0x83, 3])  # more than a PDU holds


def test_writes_reach_only_writable_registers_and_are_echoed(store: tuple[RegisterStore, Written]) -> None:
    register_store, writes = store
    assert answer(register_store, struct.pack(">BHH", 6, HEARTBEAT_IN, 0xFF00)) == struct.pack(
        ">BHH", 6, HEARTBEAT_IN, 0xFF00
    )
    assert answer(register_store, struct.pack(">BHH", 6, SOC, 1)) == bytes([0x86, 2])  # read-only
    assert answer(register_store, struct.pack(">BHHBH", 16, HEARTBEAT_IN, 1, 2, 0x00FF)) == struct.pack(
        ">BHH", 16, HEARTBEAT_IN, 1
    )
    assert answer(register_store, struct.pack(">BHHBH", 16, HEARTBEAT_IN, 1, 4, 0x00FF)) == bytes([0x90, 3])
    assert answer(register_store, struct.pack(">BHHBHH", 16, HEARTBEAT_IN, 2, 4, 1, 2)) == bytes([0x90, 2])
    assert writes == [(HEARTBEAT_IN, [0xFF00]), (HEARTBEAT_IN, [0x00FF])]
    assert register_store.read(RegisterKind.HOLDING, HEARTBEAT_IN) == [0x00FF]


def test_mask_write_and_read_write_multiple(store: tuple[RegisterStore, Written]) -> None:
    register_store, writes = store
    register_store.setValues(6, HEARTBEAT_IN, [0x1234])
    # (current AND and_mask) OR (or_mask AND NOT and_mask), as the Modbus spec defines FC 22.
    assert answer(register_store, struct.pack(">BHHH", 22, HEARTBEAT_IN, 0xFF00, 0x0056)) == struct.pack(
        ">BHHH", 22, HEARTBEAT_IN, 0xFF00, 0x0056
    )
    assert register_store.read(RegisterKind.HOLDING, HEARTBEAT_IN) == [0x1256]
    assert answer(register_store, struct.pack(">BHHH", 22, SOC, 0, 0)) == bytes([0x96, 2])
    read_write = struct.pack(">BHHHHBH", 23, HEARTBEAT_IN, 1, HEARTBEAT_IN, 1, 2, 0xBEEF)
    assert answer(register_store, read_write) == bytes([23, 2, 0xBE, 0xEF])
    assert answer(register_store, struct.pack(">BHHHHBH", 23, SOC, 1, HEARTBEAT_IN, 1, 2, 1)) == bytes([0x97, 2])
    assert answer(register_store, struct.pack(">BHHHHBH", 23, SOC, 0, HEARTBEAT_IN, 1, 2, 1)) == bytes([0x97, 3])
    assert writes[-1] == (HEARTBEAT_IN, [0xBEEF])


@pytest.mark.parametrize(
    ("pdu", "refusal"),
    [
        (bytes([0x01, 0, 0, 0, 8]), bytes([0x81, 1])),  # coils: we have no bit tables
        (bytes([0x2B, 0x0E, 0x01, 0x00]), bytes([0xAB, 1])),
        (bytes([0x41]), bytes([0xC1, 1])),
        (b"", bytes([0x80, 1])),
        (bytes([0x03, 0x01]), bytes([0x83, 3])),  # served, body cut short
        (bytes([0x10, 0x01, 0x17, 0x00, 0x01, 0x02, 0x00]), bytes([0x90, 3])),
        (bytes([0x17, 0x01]), bytes([0x97, 3])),
    ],
)
def test_unserved_and_malformed_requests_are_refused_never_raised(
    store: tuple[RegisterStore, Written],
    pdu: bytes,
    refusal: bytes,
) -> None:
    register_store, writes = store
    assert answer(register_store, pdu) == refusal
    assert writes == []


_FUNCTION_CODES = st.sampled_from([3, 4, 6, 16, 22, 23, 0x2B, 0x81, 0, 255])
_PDUS = st.one_of(
    st.binary(min_size=0, max_size=253),
    st.builds(lambda code, body: bytes([code]) + body, _FUNCTION_CODES, st.binary(max_size=252)),
    st.builds(
        lambda code, address, count, tail: struct.pack(">BHH", code, address, count) + tail,
        _FUNCTION_CODES,
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=400, deadline=None)
@given(_PDUS)
def test_any_request_pdu_gets_a_well_formed_answer(pdu: bytes) -> None:
    # The server answers whatever arrives on the LAN: a PDU of any bytes gets a reply that fits a frame.
    register_store = RegisterStore(load_register_map("generic"), on_write=lambda address, values: None)
    response = answer(register_store, pdu)
    assert 2 <= len(response) <= 253
    if len(response) == 2 and pdu and response[0] & 0x80:
        assert response[1] in (1, 2, 3, 4)

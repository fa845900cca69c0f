"""Epoch Pro packs 2 and later: requests asked only while the system reply's pack count reaches them (``only_if``)."""

from __future__ import annotations

from typing import Any

import pytest

from bmsgate.errors import DefinitionError, DeviceTimeout
from bmsgate.protocols import get_protocol
from bmsgate.protocols.checksums import crc16_modbus
from bmsgate.protocols.constructs import constructs_used
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.session import GiveUp, PollSession, SessionTiming, SnapshotReady, WaitUntil, Write

from .family_frames import EPOCH_PRO

PROTOCOL = get_protocol("epoch-pro")
SYSTEM = EPOCH_PRO.replies["system"][0]
PACK_1 = EPOCH_PRO.replies["pack_1"][0]
PACK_2 = EPOCH_PRO.replies["pack_2"][0]
PACK_COUNT_AT = 5 + 42


def _with_pack_count(count: int) -> bytes:
    body = bytearray(SYSTEM[:-2])
    body[PACK_COUNT_AT : PACK_COUNT_AT + 2] = count.to_bytes(2, "big")
    return bytes(body) + crc16_modbus(bytes(body)).to_bytes(2, "little")


def _request(pack: int) -> bytes:
    body = bytes([0xFA, 0xF3, 0x16, 0x75, 0xF8, pack, 0x00, 0x52])
    return body + crc16_modbus(body).to_bytes(2, "little")


def _poll(replies: list[bytes], timing: SessionTiming | None = None) -> tuple[list[bytes], list[Any]]:
    """Run one poll answering each write with the next reply; the writes and the last actions."""
    session = PollSession(PROTOCOL, timing=timing)
    actions = session.start_poll(0.0)
    writes: list[bytes] = []
    now = 0.0
    pending = list(replies)
    while True:
        writes += [action.data for action in actions if isinstance(action, Write)]
        if any(isinstance(action, SnapshotReady | GiveUp) for action in actions):
            return writes, actions
        if pending and any(isinstance(action, Write) for action in actions):
            now += 0.05
            actions = session.feed(pending.pop(0), now)
            continue
        wait = actions[-1]
        assert isinstance(wait, WaitUntil)
        now = max(now, wait.deadline)
        actions = session.tick(now)


def test_every_pack_the_system_counts_is_asked_in_order() -> None:
    writes, actions = _poll([SYSTEM, PACK_1, PACK_2])
    assert writes == [PROTOCOL.requests[0].frame, _request(1), _request(2)]
    (ready,) = actions
    assert isinstance(ready, SnapshotReady)
    snapshot = ready.snapshot
    assert len(snapshot.cell_voltages) == 16  # one series string: pack 1's cells
    assert snapshot.temperatures == (27.0,) * 8  # every pack's sensors
    assert snapshot.extras["pack_2_voltage"] == 53.21
    assert snapshot.extras["pack_2_cell_2"] == 3.324


def test_a_one_pack_system_is_asked_what_it_was_asked_before() -> None:
    writes, actions = _poll([_with_pack_count(1), PACK_1])
    assert writes == [PROTOCOL.requests[0].frame, _request(1)]
    (ready,) = actions
    assert isinstance(ready, SnapshotReady)
    assert "pack_2_voltage" not in ready.snapshot.extras
    assert ready.snapshot.temperatures == (27.0,) * 4


def test_a_counted_pack_that_does_not_answer_fails_the_poll() -> None:
    timing = SessionTiming(request_timeout=0.5, retries=0, poll_deadline=10.0)
    writes, actions = _poll([_with_pack_count(3), PACK_1, PACK_2], timing)
    assert writes[-1] == _request(3)
    (give_up,) = actions
    assert isinstance(give_up, GiveUp)
    assert isinstance(give_up.error, DeviceTimeout)


def test_the_pack_requests_are_the_documented_frames() -> None:
    packs = [request for request in PROTOCOL.requests if request.name.startswith("pack_")]
    assert [request.frame for request in packs] == [_request(number) for number in range(1, 9)]
    assert [request.reply for request in packs] == [number << 8 | 0xA4 for number in range(1, 9)]
    conditions = [request.only_if for request in packs[1:]]
    assert all(condition is not None and condition.var == "var.pack_count" for condition in conditions)
    assert [condition.min for condition in conditions if condition is not None] == list(range(2, 9))


def _definition(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "only-if-test",
        "title": "only_if test",
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01", "write": "ff02"}]},
        "match": [{"local_name": "X*"}],
        "framing": {"start": "AA", "fixed_length": 4, "key": {"offset": 1}, "payload_offset": 2},
        "requests": [
            {"name": "count", "frame": "AA 01", "reply": 1},
            {"name": "more", "frame": "AA 02", "reply": 2, **request},
        ],
        "replies": {
            1: {"name": "count", "fields": [{"target": "var.items", "at": 0, "type": "u8"}]},
            2: {"name": "more", "fields": [{"target": "soc", "at": 0, "type": "u8"}]},
        },
    }


def test_only_if_is_a_declared_construct() -> None:
    definition = definition_from_mapping(_definition({"only_if": {"var": "var.items", "min": 2}}))
    assert "only_if" in constructs_used(definition)
    with pytest.raises(DefinitionError, match="only_if"):
        definition_from_mapping(
            _definition({"only_if": {"var": "var.items", "min": 2}}) | {"requires": ["fixed_length"]}
        )


@pytest.mark.parametrize(
    "request_keys",
    [
        {"only_if": {"var": "var.items", "min": 2}, "streaming": True},
        {"only_if": {"var": "var.items", "min": 2}, "when": "connect"},
        {"only_if": {"var": "items", "min": 2}},
    ],
    ids=["streaming", "connect", "not_a_var"],
)
def test_only_if_is_validated(request_keys: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError):
        definition_from_mapping(_definition(request_keys))


@pytest.mark.parametrize(("items", "asked"), [(1, False), (2, True), (3, True), (4, False)])
def test_only_if_asks_within_the_range(items: int, asked: bool) -> None:
    from bmsgate.protocols import CompiledProtocol

    protocol = CompiledProtocol(
        definition_from_mapping(_definition({"only_if": {"var": "var.items", "min": 2, "max": 3}}))
    )
    session = PollSession(protocol)
    session.start_poll(0.0)
    actions = session.feed(bytes([0xAA, 0x01, items, 0x00]), 0.1)
    writes = [action.data for action in actions if isinstance(action, Write)]
    assert writes == ([bytes([0xAA, 0x02])] if asked else [])
    assert isinstance(actions[-1], WaitUntil if asked else SnapshotReady)

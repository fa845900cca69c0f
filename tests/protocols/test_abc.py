"""ABC / SOK: one request answered by several frame types (``follows``), cell frames numbered by their first
cell (``index.numbers: items``), 3-byte values with gaps between them (``u24`` lists with a ``stride``), a
signed 3-byte current (``s24``).

Frames: patman15/aiobmsble tests/bms/test_abc_bms.py (``family_frames.ABC``), whose stated values
test_families.py checks; here the constructs, on those frames.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DecodeError, DefinitionError
from bmsgate.protocols import (
    Action,
    GiveUp,
    PollSession,
    SnapshotReady,
    WaitUntil,
    Write,
    compile_definition,
    decode,
    get_protocol,
)
from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.definition import definition_from_mapping

from .family_frames import ABC

PROTOCOL = get_protocol("abc")
F0, F1, F2, F3 = (ABC.replies[name][0] for name in ("status", "device_info", "switches", "balancer"))
CELLS_1_4, CELLS_5_8 = ABC.replies["cells"]


def _writes(actions: list[Action]) -> list[bytes]:
    return [action.data for action in actions if isinstance(action, Write)]


def _poll(c1_answer: list[bytes], c2_answer: list[bytes]) -> list[Action]:
    """One poll on a fresh connection, each request answered at once, the quiet line ticked through."""
    session = PollSession(PROTOCOL, battery_id="abc")
    session.connection_reset()
    actions = session.start_poll(0.0)
    assert _writes(actions) == [bytes.fromhex("EEC000000041")]
    actions = session.feed(F1, 0.1)
    assert _writes(actions) == [bytes.fromhex("EEC1000000CE")]
    for frame in c1_answer:
        actions = session.feed(frame, 0.2)
    assert _writes(actions) == [bytes.fromhex("EEC200000046")]
    for frame in c2_answer:
        actions = session.feed(frame, 0.3)
    # Nothing says how many cell frames come: the line going quiet (the request's 1 s) ends them; the F9
    # request then goes unanswered (optional, as some packs never send it).
    now = 0.3
    while not isinstance(actions[-1], SnapshotReady):
        wait = actions[-1]
        assert isinstance(wait, WaitUntil), actions
        now = max(now, wait.deadline)
        actions = session.tick(now)
    return actions


def test_a_request_answered_by_several_frame_types() -> None:
    # As aiobmsble's mock answers: C1 with F0 and F2, C2 with F0 once more, F3 and the cell frames.
    ready = _poll([F0, F2], [F0, F3, CELLS_1_4, CELLS_5_8])[-1]
    assert isinstance(ready, SnapshotReady)
    assert [frame.key for frame in ready.frames] == [0xF1, 0xF0, 0xF2, 0xF3, 0xF4, 0xF4]
    assert ready.snapshot.cell_count == 8
    assert ready.snapshot.charge_enabled is True


def test_a_further_reply_that_comes_first_is_kept_for_its_turn() -> None:
    ready = _poll([F2, F0], [CELLS_1_4, F3, CELLS_5_8])[-1]
    assert isinstance(ready, SnapshotReady)
    assert ready.snapshot.temperatures == (20.0,)
    assert ready.snapshot.cell_count == 8


def test_cell_frames_are_placed_by_their_first_cell_in_any_order() -> None:
    in_order = PROTOCOL.decode([F0, CELLS_1_4, CELLS_5_8], timestamp=0.0)
    reversed_ = PROTOCOL.decode([F0, CELLS_5_8, CELLS_1_4], timestamp=0.0)
    assert in_order.cell_voltages == reversed_.cell_voltages == (3.442, 3.496, 3.375, 3.464, 3.457, 3.429, 3.359, 3.42)


def test_a_missing_cell_frame_is_an_error_not_a_short_pack() -> None:
    with pytest.raises(DecodeError, match="cell_voltages item 1 is missing"):
        PROTOCOL.decode([F0, CELLS_5_8], timestamp=0.0)


def _edited(frame: bytes, at: int, data: bytes) -> bytes:
    edited = bytearray(frame)
    edited[at : at + len(data)] = data
    edited[-1] = CHECKSUMS["crc8_maxim"].compute(bytes(edited[:-1]))
    return bytes(edited)


def test_a_signed_three_byte_current() -> None:
    discharging = _edited(F0, 5, (-12345).to_bytes(3, "little", signed=True))
    assert PROTOCOL.decode([discharging], timestamp=0.0).current == pytest.approx(-12.345)


def test_empty_cell_slots_of_the_last_frame_are_left_out() -> None:
    # A 6-cell pack: the second frame's last two slots hold nothing (number 0, voltage 0).
    six = _edited(CELLS_5_8, 10, bytes(8))
    assert PROTOCOL.decode([F0, CELLS_1_4, six], timestamp=0.0).cell_count == 6


def test_the_encoder_numbers_cell_frames_by_their_first_cell() -> None:
    frames = PROTOCOL.encode_replies(0xF4, {"cell_voltages": [3.3 + i / 1000 for i in range(9)]})
    assert [frame[2] for frame in frames] == [1, 5, 9]
    decoded = PROTOCOL.decode([F0, *frames], timestamp=0.0)
    assert decoded.cell_voltages == pytest.approx([3.3 + i / 1000 for i in range(9)])


def _definition(requests: list[dict[str, Any]]) -> dict[str, Any]:
    data = PROTOCOL.definition.model_dump(mode="json", exclude_none=True)
    data.pop("requires", None)
    data["requests"] = requests
    return data


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([{"name": "x", "frame": "", "reply": 0xF0, "follows": True}], "follows no request"),
        (
            [
                {"name": "a", "frame": "EE C1 00 00 00 CE", "reply": 0xF0},
                {"name": "b", "frame": "EE C2 00 00 00 46", "reply": 0xF2, "follows": True},
            ],
            "writes nothing",
        ),
        (
            [
                {"name": "a", "frame": "EE C1 00 00 00 CE", "reply": 0xF0},
                {"name": "b", "frame": "", "follows": True},
            ],
            "needs a reply",
        ),
    ],
)
def test_bad_follows_requests_are_refused(requests: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        definition_from_mapping(_definition(requests))


def test_a_list_with_gaps_of_a_struct_type() -> None:
    # The same reading one by one for types struct knows (s16 two bytes apart from the next).
    data = _definition(
        [{"name": "status", "frame": "EE C1 00 00 00 CE", "reply": 0xF0}],
    )
    data["replies"] = {
        0xF0: {
            "name": "status",
            "fields": [{"target": "temperatures", "at": 2, "type": "s16", "count": 3, "stride": 4}],
        }
    }
    protocol = compile_definition(definition_from_mapping(data))
    frame = _edited(F0, 2, b"\xfe\xff\x00\x00\x14\x00\x00\x00\x1e\x00")
    assert decode(protocol, [frame], timestamp=0.0).temperatures == (-2.0, 20.0, 30.0)
    assert decode(
        protocol, [protocol.encode_reply(0xF0, {"temperatures": [-2.0, 20.0, 30.0]})], timestamp=0.0
    ).temperatures == (
        -2.0,
        20.0,
        30.0,
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    order=st.permutations(range(6)),
    edits=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 19), st.integers(0, 255)), max_size=3),
    extra=st.lists(st.binary(max_size=24), max_size=3),
)
def test_fuzz_a_poll_fed_any_frames_in_any_order_ends_or_waits(
    order: list[int], edits: list[tuple[int, int, int]], extra: list[bytes]
) -> None:
    # The follow-up bookkeeping (frames kept for a later `follows` request) under reordered, corrupted and
    # extra frames: the session only ever waits, writes, completes or gives up with our errors.
    frames = [bytearray(frame) for frame in (F0, F2, F3, CELLS_1_4, CELLS_5_8, F1)]
    for which, position, value in edits:
        frames[which][position] = value
    session = PollSession(PROTOCOL, battery_id="fuzz")
    session.connection_reset()
    actions = session.start_poll(0.0)
    now = 0.0
    for chunk in [bytes(frames[index]) for index in order] + extra:
        now += 0.05
        actions = session.feed(chunk, now)
    for _ in range(40):
        last = actions[-1] if actions else None
        if isinstance(last, SnapshotReady | GiveUp):
            break
        assert isinstance(last, WaitUntil), actions
        now = max(now, last.deadline)
        actions = session.tick(now)
    last = actions[-1]
    assert isinstance(last, SnapshotReady | GiveUp)
    if isinstance(last, GiveUp):
        assert isinstance(last.error, BmsgateError)


def test_an_absent_cell_in_the_middle_of_a_frame_keeps_the_others_in_place() -> None:
    # Cell 2 reads 0 V (no value): cells 3 and 4 stay cells 3 and 4, and the gap is reported, not hidden.
    gap = _edited(CELLS_1_4, 7, bytes(3))
    with pytest.raises(DecodeError, match="cell_voltages item 2 is missing"):
        PROTOCOL.decode([F0, gap, CELLS_5_8], timestamp=0.0)

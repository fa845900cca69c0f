"""ECO-WORTHY: one notification is one frame (``frame_per_chunk``), two frame types, unlock writes once;
protocol version 2: the address in front of every frame (``framing.prefix``) selects its layout."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DecodeError, DefinitionError
from bmsgate.protocols import PollSession, SnapshotReady, Write, get_protocol
from bmsgate.protocols.definition import definition_from_mapping

from .family_frames import ECOWORTHY, ECOWORTHY_V2

PROTOCOL = get_protocol("ecoworthy")
STATUS = ECOWORTHY.replies["status"][0]
CELLS = ECOWORTHY.replies["cells"][0]
STATUS_V2 = ECOWORTHY_V2.replies["status"][0]
CELLS_V2 = ECOWORTHY_V2.replies["cells"][0]


def test_each_chunk_is_checked_as_one_frame() -> None:
    assembler = PROTOCOL.new_assembler()
    assert [frame.key for frame in assembler.feed(STATUS) + assembler.feed(CELLS)] == [0xA1, 0xA2]
    assert assembler.buffered == 0


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [
        (STATUS[:40], "checksum mismatch"),  # half a frame is no frame: nothing waits for the rest
        (STATUS[:-1] + bytes([STATUS[-1] ^ 1]), "checksum mismatch"),
        (b"\xa3" + STATUS[1:], "does not start with A1 or A2"),
        (STATUS[:5], "outside"),
    ],
)
def test_a_chunk_that_is_no_frame_is_dropped_with_the_reason(chunk: bytes, reason: str) -> None:
    assembler = PROTOCOL.new_assembler()
    assert assembler.feed(chunk) == []
    assert reason in (assembler.stats.last_error or "")
    assert assembler.stats.rejected == 1
    # The next whole frame is taken: nothing of the bad chunk was kept.
    assert [frame.key for frame in assembler.feed(CELLS)] == [0xA2]


def test_unlock_writes_go_once_per_connection_and_the_stream_is_read() -> None:
    session = PollSession(PROTOCOL, battery_id="x")
    session.connection_reset()
    actions = session.start_poll(0.0)
    writes = [action.data for action in actions if isinstance(action, Write)]
    assert [write[-2:] for write in writes] == [b"\x00\x2d", b"\x65\xef"]
    session.feed(STATUS, 0.5)
    session.tick(0.5)  # the runtime ticks at every WaitUntil deadline (here: the next request, at once)
    outcome = session.feed(CELLS, 0.6)
    assert isinstance(outcome[-1], SnapshotReady)
    assert outcome[-1].snapshot.voltage == pytest.approx(13.29)
    session.feed(STATUS, 9.5)
    session.feed(CELLS, 9.6)
    actions = session.start_poll(10.0)
    for _ in range(4):  # each streamed reply is taken from what arrived since the last poll, one tick each
        if isinstance(actions[-1], SnapshotReady):
            break
        actions += session.tick(10.0)
    assert not any(isinstance(action, Write) for action in actions)
    assert isinstance(actions[-1], SnapshotReady)
    session.connection_reset()
    assert sum(isinstance(action, Write) for action in session.start_poll(20.0)) == 2


def _definition(**framing: Any) -> dict[str, Any]:
    base = PROTOCOL.definition.model_dump(mode="json", exclude_none=True)
    data = {**base, "framing": {**base["framing"], **framing}}
    data.pop("requires", None)
    return data


@pytest.mark.parametrize(
    ("framing", "message"),
    [
        ({"length": {"offset": 1}}, "carry no 'length'"),
        ({"fixed_length": 84}, "carry no 'length'"),
        ({"frame_per_chunk": False}, "exactly one of .length. and .fixed_length."),
        ({"starts": ["A2", "A3"]}, "must include 'start'"),
        ({"text": "hex", "end": "0D"}, "for binary frames"),
    ],
)
def test_bad_chunk_framings_are_refused(framing: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        definition_from_mapping(_definition(**framing))


def test_a_frame_behind_the_address_is_keyed_by_its_type_at_byte_6() -> None:
    assembler = PROTOCOL.new_assembler()
    assert [frame.key for frame in assembler.feed(STATUS_V2) + assembler.feed(CELLS_V2)] == [0xA1, 0xA2]
    assert PROTOCOL.variables_of([STATUS_V2])["address_prefixed"] == 1
    assert PROTOCOL.variables_of([STATUS])["address_prefixed"] == 0


def test_the_prefix_chooses_the_layout_per_frame() -> None:
    # Version 2's current is in 0.1 A: read with version 1's layout it would be 100 times too small.
    v2 = PROTOCOL.decode([STATUS_V2, CELLS_V2], timestamp=0.0)
    assert v2.current == pytest.approx(-6.0)
    assert v2.soc == 98
    assert PROTOCOL.decode([STATUS, CELLS], timestamp=0.0).current == pytest.approx(-1.14)
    with pytest.raises(DecodeError, match="soh of 1328 % is impossible"):  # version 1's offsets on it
        PROTOCOL.decode([STATUS_V2], timestamp=0.0, variant="v1")


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [
        (b"\x00" * 6 + b"\xa3" + STATUS_V2[7:], "does not start with A1 or A2 at byte 6"),
        (STATUS_V2[:-1] + bytes([STATUS_V2[-1] ^ 1]), "checksum mismatch"),  # the CRC covers the address
        (STATUS_V2[1:], "does not start with A1 or A2 at byte 6"),  # an address one byte short
    ],
)
def test_a_bad_prefixed_chunk_is_dropped_with_the_reason(chunk: bytes, reason: str) -> None:
    assembler = PROTOCOL.new_assembler()
    assert assembler.feed(chunk) == []
    assert reason in (assembler.stats.last_error or "")


def test_the_encoder_writes_the_prefixed_layout_behind_zero_bytes() -> None:
    state = {"voltage": 13.28, "current": -6.0, "soc": 98, "var.address_prefixed": 1}
    frame = PROTOCOL.encode_reply(0xA1, state)
    assert frame[:7] == bytes(6) + b"\xa1"
    snapshot = PROTOCOL.decode([frame], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(13.28)
    assert snapshot.current == pytest.approx(-6.0)
    assert snapshot.soc == 98
    assert PROTOCOL.encode_reply(0xA1, {**state, "var.address_prefixed": 0})[0] == 0xA1


def test_a_prefix_needs_frame_per_chunk() -> None:
    data = _definition()
    data["framing"] = {"start": "A1", "length": {"offset": 1}, "prefix": {"size": 6, "var": "var.address_prefixed"}}
    with pytest.raises(DefinitionError, match="'prefix' needs 'frame_per_chunk'"):
        definition_from_mapping(data)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(position=st.integers(min_value=0, max_value=len(STATUS_V2) - 1), value=st.integers(0, 255), cut=st.booleans())
def test_fuzz_mutated_prefixed_frames_raise_only_our_errors(position: int, value: int, cut: bool) -> None:
    chunk = bytearray(STATUS_V2)
    chunk[position] = value
    wire = bytes(chunk[:position] if cut else chunk)
    assembler = PROTOCOL.new_assembler()
    try:
        frames = assembler.feed(wire)
        PROTOCOL.decode([*frames, CELLS_V2], timestamp=0.0)
        PROTOCOL.decode([wire], timestamp=0.0)
    except BmsgateError:
        pass

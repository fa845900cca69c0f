"""CBT Power VB: Pylontech-style hex text whose replies carry no command (``key.in_replies: false``).

Frames: patman15/aiobmsble tests/bms/test_cbtpwr_vb_bms.py (``family_frames.CBTPWR_VB``), with the values
stated there (checked in test_families.py); here the construct that tells its replies apart.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError
from bmsgate.protocols import PollSession, SnapshotReady, Write, get_protocol
from bmsgate.protocols.definition import definition_from_mapping

from .family_frames import CBTPWR_VB

PROTOCOL = get_protocol("cbtpwr-vb")
ANALOG = CBTPWR_VB.replies["analog"][0]
CAPACITY = CBTPWR_VB.replies["capacity"][0]
ANALOG_FRAME = PROTOCOL.new_assembler().feed(ANALOG)[0]
CAPACITY_FRAME = PROTOCOL.new_assembler().feed(CAPACITY)[0]


def test_requests_go_out_as_aiobmsble_writes_them() -> None:
    assert [PROTOCOL.wire(request.frame) for request in PROTOCOL.requests] == [
        b"~11014642E00201FD35\r",
        b"~11014681A006010001FC71\r",
    ]


def test_replies_are_read_without_a_key() -> None:
    assembler = PROTOCOL.new_assembler()
    frames = assembler.feed(ANALOG[:20]) + assembler.feed(ANALOG[20:] + CAPACITY)
    # Byte 4 of a reply is its return code (00), not the command: nothing is read as a key.
    assert [frame.key for frame in frames] == [None, None]


def test_the_session_gives_each_reply_the_key_of_the_request_just_sent() -> None:
    session = PollSession(PROTOCOL, battery_id="x")
    session.connection_reset()
    actions = session.start_poll(0.0)
    assert [action.data for action in actions if isinstance(action, Write)] == [b"~11014642E00201FD35\r"]
    # The capacity reply arriving first would be taken for the analog one: the protocol cannot tell them
    # apart, which is why requests are never pipelined. In order, each answers its request.
    actions = session.feed(ANALOG, 0.1)
    assert [action.data for action in actions if isinstance(action, Write)] == [b"~11014681A006010001FC71\r"]
    outcome = session.feed(CAPACITY, 0.2)
    ready = outcome[-1]
    assert isinstance(ready, SnapshotReady)
    assert [frame.key for frame in ready.frames] == [0x42, 0x81]
    assert ready.snapshot.voltage == pytest.approx(13.3)
    assert ready.snapshot.design_capacity == pytest.approx(200.0)


def test_unkeyed_frames_given_to_decode_answer_the_requests_in_order() -> None:
    snapshot = PROTOCOL.decode([ANALOG_FRAME, CAPACITY_FRAME], timestamp=0.0)
    assert snapshot.cell_count == 4
    assert snapshot.design_capacity == pytest.approx(200.0)
    # Raw bytes too (conformance vectors list frames so); a frame the session keyed keeps its key.
    raw = PROTOCOL.decode([ANALOG_FRAME.raw, CAPACITY_FRAME.raw], timestamp=0.0)
    assert raw.design_capacity == pytest.approx(200.0)
    keyed = PROTOCOL.decode([CAPACITY_FRAME._replace(key=0x81)], timestamp=0.0)
    assert keyed.design_capacity == pytest.approx(200.0)


def _definition(**changes: Any) -> dict[str, Any]:
    data = PROTOCOL.definition.model_dump(mode="json", exclude_none=True)
    data.pop("requires", None)
    data.update(changes)
    return data


def test_a_request_must_carry_the_key_of_the_reply_it_names() -> None:
    data = _definition()
    data["requests"][1]["reply"] = 0x42
    data["requests"][0]["reply"] = 0x81
    with pytest.raises(DefinitionError, match=r"expects reply 0x81, but its frame carries 42 at the key's offset 4"):
        definition_from_mapping(data)


def test_no_request_may_listen_when_replies_carry_no_key() -> None:
    data = _definition()
    data["requests"].append({"name": "stream", "frame": "", "reply": 0x42, "streaming": True})
    with pytest.raises(DefinitionError, match="no request may stream or listen"):
        definition_from_mapping(data)


def test_the_encoder_writes_no_key_into_a_reply() -> None:
    # Byte 4 of a reply is the return code: 00 as in the capture, not the request's command 0x81.
    assert PROTOCOL.encode_reply(0x81, {"design_capacity": 200.0})[4] == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(position=st.integers(min_value=0, max_value=len(ANALOG) - 1), value=st.integers(0, 255), cut=st.booleans())
def test_fuzz_mutated_text_raises_only_our_errors(position: int, value: int, cut: bool) -> None:
    wire = bytearray(ANALOG)
    wire[position] = value
    data = bytes(wire[:position] if cut else wire)
    session = PollSession(PROTOCOL, battery_id="fuzz")
    session.connection_reset()
    session.start_poll(0.0)
    try:
        session.feed(data, 0.1)
        session.feed(CAPACITY, 0.2)
        session.tick(99.0)
        PROTOCOL.decode([*PROTOCOL.new_assembler().feed(data), CAPACITY_FRAME], timestamp=0.0)
    except BmsgateError:
        pass

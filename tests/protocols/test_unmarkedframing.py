"""Frames without a start marker on the wire (``marker_on_wire: false``, Super-B): one frame per chunk."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.unmarkedframing import UnmarkedChunkAssembler, to_wire

from .family_frames import SUPERB

SUPERB_PROTOCOL = get_protocol("superb")
FRAMING = SUPERB_PROTOCOL.definition.framing
NOTIFICATION = SUPERB.replies["status"][0]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_notification_becomes_the_frame_with_the_marker_in_front() -> None:
    assembler = UnmarkedChunkAssembler(FRAMING)
    (frame,) = assembler.feed(NOTIFICATION)
    assert frame.raw == b"S" + NOTIFICATION
    assert frame.key == 0x53
    assert (assembler.stats.frames, assembler.stats.rejected, assembler.buffered) == (1, 0, 0)
    assert isinstance(SUPERB_PROTOCOL.new_assembler(), UnmarkedChunkAssembler)


@pytest.mark.parametrize(
    "chunk",
    [b"", NOTIFICATION[:-1], NOTIFICATION + b"\x00", NOTIFICATION[:10], NOTIFICATION * 2],
    ids=["empty", "too_short", "too_long", "half", "two_glued"],
)
def test_a_chunk_of_another_size_is_dropped_with_its_reason(chunk: bytes) -> None:
    assembler = UnmarkedChunkAssembler(FRAMING)
    assert assembler.feed(chunk) == []
    assert assembler.stats.rejected == 1
    assert f"a chunk of {len(chunk) + 1} bytes" in (assembler.stats.last_error or "")
    # Nothing is carried over: the next good notification is a frame of its own.
    assert [frame.raw for frame in assembler.feed(NOTIFICATION)] == [b"S" + NOTIFICATION]


def test_the_wire_form_leaves_the_marker_out_and_feeds_back_to_the_same_frame() -> None:
    (frame,) = UnmarkedChunkAssembler(FRAMING).feed(NOTIFICATION)
    assert to_wire(frame.raw, FRAMING) == NOTIFICATION
    assert SUPERB_PROTOCOL.wire(frame.raw) == NOTIFICATION
    assert SUPERB_PROTOCOL.wire(b"") == b""  # the listening request writes nothing


def test_a_whole_frame_given_with_its_marker_decodes() -> None:
    snapshot = SUPERB_PROTOCOL.decode([b"S" + NOTIFICATION], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(14.159, abs=5e-4)
    assert snapshot.current == pytest.approx(-0.4, abs=1e-6)


def _definition(framing: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "unmarked-test",
        "title": "unmarked test",
        "requires": ["frame_per_chunk", "listen", "streaming", "unmarked"],
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01"}]},
        "match": [{"local_name": "X*"}],
        "framing": {"start": "53", "marker_on_wire": False, "key": {"offset": 0}, "payload_offset": 1, **framing},
        "requests": [{"name": "read", "frame": "", "reply": 0x53, "streaming": True}],
        "replies": {0x53: {"name": "read", "fields": [{"target": "soc", "at": 0, "type": "u8"}]}},
    }


@pytest.mark.parametrize(
    "framing",
    [
        {"fixed_length": 5},
        {"length": {"offset": 1, "size": 1}},
        {"frame_per_chunk": True, "prefix": {"size": 2, "var": "var.prefixed"}},
        {"frame_per_chunk": True, "starts": ["53", "54"]},
    ],
    ids=["stream_fixed", "stream_length", "prefix", "starts"],
)
def test_the_definition_refuses_it_outside_binary_frame_per_chunk(framing: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError, match="marker_on_wire"):
        definition_from_mapping(_definition(framing))


def test_a_minimal_unmarked_definition_declares_the_construct() -> None:
    definition = definition_from_mapping(_definition({"frame_per_chunk": True, "min_length": 2, "max_length": 2}))
    assert "unmarked" in (definition.requires or [])
    with pytest.raises(DefinitionError, match="unmarked"):
        definition_from_mapping(
            _definition({"frame_per_chunk": True}) | {"requires": ["frame_per_chunk", "listen", "streaming"]}
        )


@given(data=st.lists(st.binary(max_size=48) | st.binary(min_size=20, max_size=20), max_size=30))
@FUZZ
def test_fuzz_notifications_raise_only_our_errors_and_give_finite_values(data: list[bytes]) -> None:
    assembler = SUPERB_PROTOCOL.new_assembler()
    for chunk in data:
        for frame in assembler.feed(chunk):
            assert len(frame.raw) == 21
            try:
                snapshot = SUPERB_PROTOCOL.decode([frame], timestamp=0.0)
            except BmsgateError:
                continue
            for value in (snapshot.voltage, snapshot.current):
                assert value is None or math.isfinite(value)
        assert assembler.buffered == 0

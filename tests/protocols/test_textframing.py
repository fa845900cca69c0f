"""Hex-text framing (E&J): text on the wire, decoded frames inside, any chunking, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.textframing import to_wire

EJ = get_protocol("ej")
CAPACITY = b":009031001E00000002000A000AD8~"
REALTIME = (
    b":0082310080000101C00000880F540F3C0F510FD70F310F2C0F340F3A0FED0FED0000000000000000"
    b"000000000000000248424242F0000000000000000001AB~"
)


def test_frames_are_the_markers_around_the_decoded_bytes() -> None:
    (frame,) = EJ.new_assembler().feed(CAPACITY)
    assert frame.raw == b":" + bytes.fromhex(CAPACITY[1:-1].decode()) + b"~"
    assert frame.key == 0x90
    assert to_wire(frame.raw, EJ.definition.framing) == CAPACITY
    assert EJ.wire(EJ.requests[0].frame) == b":000250000E03~"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_any_chunking_gives_the_same_frames(sizes: list[int]) -> None:
    wire = b"AT\r\n" + REALTIME + b"noise" + CAPACITY
    assembler = EJ.new_assembler()
    frames, position, index = [], 0, 0
    while position < len(wire):
        size = sizes[index % len(sizes)]
        frames += assembler.feed(wire[position : position + size])
        position, index = position + size, index + 1
    assert [frame.key for frame in frames] == [0x82, 0x90]


def test_a_frame_cut_by_the_next_start_is_dropped_and_the_next_one_kept() -> None:
    assembler = EJ.new_assembler()
    frames = assembler.feed(REALTIME[:50] + CAPACITY)
    assert [frame.key for frame in frames] == [0x90]
    assert assembler.stats.rejected == 1
    assert "not hex text" in (assembler.stats.last_error or "")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b":009031001E0000001400080016F4x", None),  # no end marker yet: waits
        (b":009031001D0000001400080016F4~", "length field"),
        (b":009031001E00000002000A000AD9~", "checksum mismatch"),
        (b":009031001E000X001400080016F4~", "not hex text"),
        (b":009031001E00000002000A000AD~", "odd number"),
    ],
)
def test_bad_text_frames_are_rejected_with_the_reason(wire: bytes, reason: str | None) -> None:
    assembler = EJ.new_assembler()
    assert assembler.feed(wire) == []
    if reason is None:
        assert assembler.stats.rejected == 0
    else:
        assert reason in (assembler.stats.last_error or "")


def test_unframed_text_is_bounded() -> None:
    assembler = EJ.new_assembler()
    for _ in range(200):
        assembler.feed(b":" + b"0" * 500)
    assert assembler.buffered <= 2 * EJ.definition.framing.max_length * 4


def test_text_framing_needs_an_end_marker_that_is_no_hex_digit() -> None:
    base = EJ.definition.model_dump(mode="json", exclude_none=True)
    for change, message in (
        ({"end": None}, "needs an end marker"),
        ({"end": "41"}, "needs a byte that is no hex digit"),
    ):
        data = {**base, "framing": {**base["framing"], **change}}
        data.pop("requires", None)
        with pytest.raises(DefinitionError, match=message):
            definition_from_mapping(data)
    binary = {**base, "framing": {**base["framing"]}}
    binary["framing"].pop("text")
    binary.pop("requires", None)
    with pytest.raises(DefinitionError, match="need hex-text framing"):
        definition_from_mapping(binary)


def test_stripped_bytes_vanish_before_framing() -> None:
    boozt = get_protocol("pwrboozt")
    padded = b":0151\x0050000EFE\x00~\x00\x00"
    # The request's own form (a frame of this protocol, not a reply) shows NULs vanish anywhere.
    assembler = boozt.new_assembler()
    assert assembler.feed(padded[:7]) == []
    assert assembler.buffered == 6  # the NUL is gone
    base = boozt.definition.model_dump(mode="json", exclude_none=True)
    base.pop("requires", None)
    for value, message in ((["41"], "neither hex digits nor markers"), (["7E"], "nor markers"), (["0000"], "single")):
        with pytest.raises(DefinitionError, match=message):
            definition_from_mapping({**base, "framing": {**base["framing"], "strip_bytes": value}})
    binary = {**base, "framing": {**base["framing"]}}
    binary["framing"].pop("text")
    with pytest.raises(DefinitionError, match="'strip_bytes' need hex-text framing"):
        definition_from_mapping(binary)

"""Byte-stuffed frames (``framing.escape``, MyVolta): escapes removed, bounded, resynchronising."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.stuffedframing import StuffedFrameAssembler, to_wire

from .family_frames import MYVOLTA

MYVOLTA_PROTOCOL = get_protocol("myvolta")
FRAMING = MYVOLTA_PROTOCOL.definition.framing
METRICS = MYVOLTA.replies["metrics"][0]
STREAM = b"".join(frame for frames in MYVOLTA.replies.values() for frame in frames)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed(*chunks: bytes) -> tuple[StuffedFrameAssembler, list[bytes]]:
    assembler = StuffedFrameAssembler(FRAMING)
    return assembler, [frame.raw for chunk in chunks for frame in assembler.feed(chunk)]


def _with_checksum(body: bytes) -> bytes:
    """A MyVolta frame (markers around `body` + its checksum), unescaped."""
    return b"\x55\x55" + body + bytes([0xFF ^ (sum(body[1:]) & 0xFF)]) + b"\x04\x04"


def test_the_capture_stream_gives_every_frame_and_noise_is_counted() -> None:
    assembler, frames = _feed(b"\x00\x04\x01" + STREAM)
    assert frames == [frame for frames in MYVOLTA.replies.values() for frame in frames]
    assert assembler.stats.rejected == 0
    assert assembler.stats.noise_bytes == 3
    assert isinstance(MYVOLTA_PROTOCOL.new_assembler(), StuffedFrameAssembler)


@given(cuts=st.lists(st.integers(1, len(STREAM) - 1), max_size=30, unique=True))
@FUZZ
def test_any_split_into_notifications_gives_the_same_frames(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert _feed(*[STREAM[low:high] for low, high in itertools.pairwise(bounds)])[1] == _feed(STREAM)[1]


def test_escaped_control_bytes_are_data_and_do_not_end_the_frame() -> None:
    # Data 05 04 04 55 05: on the wire each is escaped; the unescaped 04 04 would otherwise end the frame.
    frame = _with_checksum(bytes.fromhex("010002000000080504045505000000"))
    wire = to_wire(frame, FRAMING)
    assert wire == bytes.fromhex("555501000200000008050505040504055505050000008E") + b"\x04\x04"
    assembler, frames = _feed(wire)
    assert frames == [frame]
    assert MYVOLTA_PROTOCOL.wire(frame) == wire
    snapshot = MYVOLTA_PROTOCOL.decode([assembler.feed(wire)[0]], timestamp=0.0)
    assert snapshot.voltage == pytest.approx(0x0405 / 1000)


def test_a_frame_without_escapes_is_its_own_wire_form() -> None:
    assert to_wire(METRICS, FRAMING) == METRICS


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        # aiobmsble's invalid responses: a wrong checksum, a wrong length byte.
        (bytes.fromhex("55550100020000000801E0C8FF14E0AE03FF0404"), "checksum"),
        (bytes.fromhex("55550100020000000A01E0C8FF14E0AE03A60404"), "length"),
        (bytes.fromhex("55558300080174") + b"\x04\x04", "length"),
    ],
    ids=["wrong_crc", "wrong_len", "short"],
)
def test_a_bad_frame_is_dropped_with_its_reason_and_the_next_one_reads(wire: bytes, reason: str) -> None:
    assembler, frames = _feed(wire, METRICS)
    assert frames == [METRICS]
    assert assembler.stats.rejected == 1
    assert reason in (assembler.stats.last_error or "")


def test_a_frame_whose_end_marker_is_lost_is_dropped_and_the_buffer_stays_bounded() -> None:
    assembler = StuffedFrameAssembler(FRAMING)
    assert assembler.feed(METRICS[:-2]) == []
    for _ in range(40):
        assert assembler.feed(bytes(range(6, 40))) == []
        assert assembler.buffered <= FRAMING.max_length + 1
    assert assembler.stats.rejected >= 1
    assert "no end marker" in (assembler.stats.last_error or "")
    assert [frame.raw for frame in assembler.feed(METRICS)] == [METRICS]
    assembler.feed(METRICS[:5])
    assembler.reset()
    assert assembler.buffered == 0


def _definition(framing: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "stuffed-test",
        "title": "stuffed test",
        "requires": ["fixed_length", "listen", "streaming", "stuffing"],
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01"}]},
        "match": [{"local_name": "X*"}],
        "framing": {"start": "02", "key": {"offset": 1}, "escape": "10", **framing},
        "requests": [{"name": "read", "frame": "", "reply": 1, "streaming": True}],
        "replies": {1: {"name": "read", "fields": [{"target": "soc", "at": 0, "type": "u8"}]}},
    }


@pytest.mark.parametrize(
    "framing",
    [
        {"fixed_length": 5},
        {"end": "03", "frame_per_chunk": True},
        {"end": "03", "fixed_length": 5, "escape": "10 10"},
    ],
    ids=["no_end", "frame_per_chunk", "two_bytes"],
)
def test_the_definition_refuses_escape_where_it_cannot_work(framing: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError, match="'escape'"):
        definition_from_mapping(_definition(framing))


def test_a_minimal_stuffed_definition_declares_the_construct() -> None:
    definition = definition_from_mapping(_definition({"end": "03", "fixed_length": 4, "payload_offset": 2}))
    assert "stuffing" in (definition.requires or [])


@given(
    data=st.lists(
        st.binary(max_size=80) | st.sampled_from([b"\x55\x55", b"\x04\x04", b"\x05", METRICS, METRICS[:9]]),
        max_size=40,
    )
)
@FUZZ
def test_fuzz_streams_raise_only_our_errors(data: list[bytes]) -> None:
    assembler = MYVOLTA_PROTOCOL.new_assembler()
    for chunk in data:
        for frame in assembler.feed(chunk):
            try:
                MYVOLTA_PROTOCOL.decode([frame], timestamp=0.0)
            except BmsgateError:
                pass
        assert assembler.buffered <= FRAMING.max_length + 1

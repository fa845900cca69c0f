"""XOR-scrambled hex text (``framing.scramble``, WS Nova): descrambled in, scrambled out, bounded."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import BmsgateError, DecodeError, DefinitionError, FrameError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.framingspec import ScrambleSpec
from bmsgate.protocols.scrambling import xor_with_key
from bmsgate.protocols.textframing import TextFrameAssembler

from .family_frames import WS_NOVA

WS_NOVA_PROTOCOL = get_protocol("ws-nova")
FRAMING = WS_NOVA_PROTOCOL.definition.framing
STATUS = WS_NOVA.replies["status"][0]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed(*chunks: bytes) -> tuple[TextFrameAssembler, list[bytes]]:
    assembler = TextFrameAssembler(FRAMING)
    return assembler, [frame.raw for chunk in chunks for frame in assembler.feed(chunk)]


def _status_frame() -> bytes:
    return _feed(STATUS)[1][0]


def test_the_capture_is_descrambled_with_the_key_byte_kept() -> None:
    frame = _status_frame()
    # On the wire decoded byte 3 is 0x20 (characters 7-8 "20"): every other byte is XOR-ed with it.
    assert frame[:6].hex() == "3a01540120ec"
    assert frame[4] == 0x20
    assert frame[-2:] == bytes.fromhex("aa7e")  # the checksum byte is outside the span: as sent
    assert frame[92:105] == b"5500724211093"


@given(cuts=st.lists(st.integers(1, len(STATUS) - 1), max_size=30, unique=True))
@FUZZ
def test_any_split_into_notifications_gives_the_same_frame(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STATUS)]
    assert _feed(*[STATUS[low:high] for low, high in itertools.pairwise(bounds)])[1] == [_status_frame()]


def test_the_wire_form_scrambles_again_so_a_simulator_reply_is_the_capture() -> None:
    assert WS_NOVA_PROTOCOL.wire(_status_frame()) == STATUS


def test_the_read_request_carries_key_zero_and_is_sent_as_aiobmsble_writes_it() -> None:
    request = WS_NOVA_PROTOCOL.requests[0].frame
    assert WS_NOVA_PROTOCOL.wire(request) == b":015150000EFE~"


def test_another_key_reads_the_same_values() -> None:
    # The same frame scrambled with key 0x5A: the pack may choose any key per frame.
    frame = bytearray(_status_frame())
    frame[4] = 0x5A
    rekeyed = WS_NOVA_PROTOCOL.wire(bytes(frame))
    assert rekeyed != STATUS
    assert rekeyed[7:9] == b"5A"
    assembler, frames = _feed(rekeyed)
    assert frames == [bytes(frame)]
    snapshot = WS_NOVA_PROTOCOL.decode(assembler.feed(rekeyed), timestamp=0.0)
    assert snapshot.voltage == pytest.approx(13.015)
    assert snapshot.cell_voltages == pytest.approx([3.253, 3.253, 3.257, 3.252])


def test_xor_with_key_is_its_own_inverse_and_keeps_key_and_span_bounds() -> None:
    spec = ScrambleSpec(key_at=2, start=1, end=-1)
    frame = bytes.fromhex("3A 11 0F 22 33 7E")
    scrambled = xor_with_key(frame, spec)
    assert scrambled == bytes.fromhex("3A 1E 0F 2D 3C 7E")
    assert xor_with_key(scrambled, spec) == frame
    assert xor_with_key(bytes.fromhex("3A 11 00 22 7E"), spec) == bytes.fromhex("3A 11 00 22 7E")


@pytest.mark.parametrize(
    ("frame", "spec"),
    [
        (b":\x01~", ScrambleSpec(key_at=4, start=1, end=-2)),
        (b":\x01\x02\x03\x04\x05~", ScrambleSpec(key_at=1, start=5, end=3)),
        (b":\x01\x02~", ScrambleSpec(key_at=1, start=0, end=9)),
    ],
    ids=["key_beyond", "span_reversed", "span_beyond"],
)
def test_a_frame_too_short_for_key_or_span_is_refused(frame: bytes, spec: ScrambleSpec) -> None:
    with pytest.raises(FrameError, match="too short"):
        xor_with_key(frame, spec)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        # aiobmsble's invalid responses (tests/bms/test_ws_nova_bms.py): a wrong end, an odd length, no hex.
        (STATUS[:-2] + b"#", None),
        (b":" + STATUS[2:], "odd number"),
        (b":z" + STATUS[2:], "not hex"),
        (STATUS[:121] + b"~", "outside"),
        (b":0154~", "too short for its scramble key"),
    ],
    ids=["wrong_EOF", "wrong_length", "wrong_encoding", "too_short", "no_key_byte"],
)
def test_a_bad_frame_is_dropped_with_its_reason_and_the_next_one_reads(wire: bytes, reason: str | None) -> None:
    assembler, frames = _feed(wire, STATUS)
    assert frames == [_status_frame()]
    if reason is not None:
        assert assembler.stats.rejected >= 1
        assert reason in (assembler.stats.last_error or "")


def test_another_frame_type_is_no_reply_this_protocol_decodes() -> None:
    # aiobmsble's wrong_type: characters 1-4 "2175" make the type 01 55.
    assembler, frames = _feed(b":2175" + STATUS[5:])
    assert len(frames) == 1
    with pytest.raises(DecodeError, match="none of the frames"):
        WS_NOVA_PROTOCOL.decode(assembler.feed(b":2175" + STATUS[5:]), timestamp=0.0)


def _definition(framing: dict[str, Any], requires: list[str]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": "scramble-test",
        "title": "scramble test",
        "requires": requires,
        "gatt": {"profiles": [{"service": "ff00", "notify": "ff01", "write": "ff02"}]},
        "match": [{"local_name": "X*"}],
        "framing": {"start": "3A", "end": "7E", "key": {"offset": 1}, **framing},
        "requests": [{"name": "read", "frame": "3A 01 00 7E", "reply": 1}],
        "replies": {1: {"name": "read", "fields": [{"target": "soc", "at": 0, "type": "u8"}]}},
    }


def test_the_definition_refuses_scramble_without_hex_text() -> None:
    framing = {"fixed_length": 5, "scramble": {"key_at": 2, "end": -1}}
    with pytest.raises(DefinitionError, match="'scramble' needs hex-text framing"):
        definition_from_mapping(_definition(framing, ["fixed_length", "scramble"]))


def test_a_minimal_scrambled_definition_declares_the_construct() -> None:
    framing = {"text": "hex", "scramble": {"key_at": 2, "start": 1, "end": -1}, "payload_offset": 3}
    definition = definition_from_mapping(_definition(framing, ["scramble", "text"]))
    assert "scramble" in (definition.requires or [])
    with pytest.raises(DefinitionError, match="scramble"):
        definition_from_mapping(_definition(framing, ["text"]))


@given(
    data=st.lists(
        st.binary(max_size=80)
        | st.sampled_from([b":", b"~", b"20", STATUS, STATUS[:100], STATUS[120:], b":2175" + STATUS[5:]]),
        max_size=40,
    )
)
@FUZZ
def test_fuzz_streams_raise_only_our_errors(data: list[bytes]) -> None:
    assembler = WS_NOVA_PROTOCOL.new_assembler()
    for chunk in data:
        for frame in assembler.feed(chunk):
            try:
                WS_NOVA_PROTOCOL.decode([frame], timestamp=0.0)
            except BmsgateError:
                pass
        assert assembler.buffered <= 4 * 2 * FRAMING.max_length + len(chunk)


@given(
    frame=st.binary(max_size=300), key_at=st.integers(0, 300), start=st.integers(-300, 300), end=st.integers(-300, 300)
)
@FUZZ
def test_fuzz_xor_raises_only_frame_errors_and_inverts(frame: bytes, key_at: int, start: int, end: int) -> None:
    spec = ScrambleSpec(key_at=key_at, start=start, end=end)
    try:
        scrambled = xor_with_key(frame, spec)
    except FrameError:
        return
    assert len(scrambled) == len(frame)
    assert xor_with_key(scrambled, spec) == frame

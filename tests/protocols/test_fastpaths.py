"""The decoder's fast paths give exactly what their straightforward forms give, for every built-in framing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import FrameError
from bmsgate.protocols import Frame, decode, get_protocol
from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.framing import FrameChecker

_VECTORS: Final = Path(__file__).resolve().parents[2] / "spec" / "vectors"
_PROTOCOLS: Final = default_catalog().names(Kind.PROTOCOL)


def _vector_polls(name: str) -> list[list[bytes]]:
    """The frames of each of the protocol's decode vectors (real captures where there are any)."""
    polls: list[list[bytes]] = []
    for path in sorted((_VECTORS / name).glob("decode-*.json")):
        vector = json.loads(path.read_text(encoding="utf-8"))
        if vector["protocol"] == name:
            polls.append([bytes.fromhex(text) for text in vector["frames"]])
    return polls


def _vector_frames(name: str) -> list[bytes]:
    return [frame for poll in _vector_polls(name) for frame in poll]


def _outcome(check: Any, raw: bytes) -> Frame | str:
    try:
        frame: Frame = check(raw)
    except FrameError as exc:
        return f"FrameError: {exc}"
    return frame


@pytest.mark.parametrize("name", _PROTOCOLS)
def test_the_fast_frame_check_agrees_with_the_step_by_step_one(name: str) -> None:
    checker = FrameChecker(get_protocol(name).definition.framing)
    frames = _vector_frames(name)
    assert frames, f"{name} has no decode vector"
    generator = random.Random(name)
    accepted = 0
    for frame in frames:
        assert checker.check(frame) == checker.check_slowly(frame)
        for _ in range(300):
            data = bytearray(frame)
            for _ in range(generator.randrange(1, 4)):
                data[generator.randrange(len(data))] = generator.getrandbits(8)
            cut = generator.choice([0, 0, 1, 3, -2])
            candidate = bytes(data[:-cut] if cut > 0 else data + bytes(-cut))
            fast, slow = _outcome(checker.check, candidate), _outcome(checker.check_slowly, candidate)
            assert fast == slow, candidate.hex()
            accepted += isinstance(fast, tuple)
    # Checksum-free and lenient framings accept many mutations; the others must have refused most.
    assert accepted < len(frames) * 300


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1100) | st.integers(min_value=0, max_value=1100).map(lambda n: b"\xff" * n))
def test_inlined_sums_are_the_sums_they_name(data: bytes) -> None:
    total = sum(data)
    expected = {
        "sum8": total & 0xFF,
        "sum16": total & 0xFFFF,
        "sum8_complement": (0x100 - total) & 0xFF,
        "sum16_complement": (0x10000 - total) & 0xFFFF,
        "sum8_not": ~total & 0xFF,
    }
    for name, value in expected.items():
        assert CHECKSUMS[name].compute(data) == value, name
        assert CHECKSUMS[name].compute(memoryview(data)) == value, name


@pytest.mark.parametrize("name", _PROTOCOLS)
def test_frames_in_any_order_and_as_raw_bytes_decode_alike(name: str) -> None:
    protocol = get_protocol(name)
    generator = random.Random(name)
    for poll in _vector_polls(name):
        frames = [protocol.check_frame(raw) for raw in poll]
        reference = decode(protocol, frames, battery_id="t", timestamp=0.0)
        assert decode(protocol, poll, battery_id="t", timestamp=0.0) == reference
        keys = [frame.key for frame in frames]
        if len(set(keys)) == len(keys):  # frames of one numbered reply keep their arrival order: not shuffled
            for _ in range(3):
                shuffled = frames[:]
                generator.shuffle(shuffled)
                assert decode(protocol, shuffled, battery_id="t", timestamp=0.0) == reference


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["jk", "jbd", "daly", "seplos"]),
    picks=st.lists(st.tuples(st.integers(0, 50), st.integers(-1, 400)), max_size=5),
    sizes=st.lists(st.sampled_from([1, 2, 7, 20, 64, 128, 244, 512]), min_size=1, max_size=8),
    junk=st.booleans(),
)
def test_a_frame_awaited_across_chunks_assembles_as_fed_byte_by_byte(
    name: str, picks: list[tuple[int, int]], sizes: list[int], junk: bool
) -> None:
    protocol = get_protocol(name)
    frames = _vector_frames(name)
    stream = bytearray()
    for pick, damage in picks:
        frame = bytearray(frames[pick % len(frames)])
        if 0 <= damage < len(frame):
            frame[damage] ^= 0x5A  # a corrupt candidate the assembler must resynchronise after
        stream += frame
    chunks: list[bytes] = []
    position = 0
    while position < len(stream):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(bytes(stream[position : position + size]))
        position += size
    ignored = protocol.definition.framing.ignore_chunks
    if junk and ignored:
        chunks = [piece for chunk in chunks for piece in (chunk, ignored[0])]  # junk between notifications
    chunked, single = protocol.new_assembler(), protocol.new_assembler()
    got = [frame for chunk in chunks for frame in chunked.feed(bytearray(chunk))]
    expected = [frame for byte in stream for frame in single.feed(bytes([byte]))]
    assert got == expected
    assert chunked.buffered == single.buffered

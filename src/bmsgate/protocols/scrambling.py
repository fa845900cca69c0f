"""XOR scrambling with a key byte the frame carries (``framing.scramble``; sans-IO, engine 6).

WS Nova (Wattstunde Nova Core) packs send hex text whose decoded bytes are XOR-ed with one key byte, and the
key travels in the frame itself (decoded byte 3, i.e. frame byte 4 after the ``:`` marker). The engine keeps
one frame form, the **descrambled** bytes with the key byte left as received, so the checker, the key, the
fields and the encoder count and read bytes as the pack means them, and the transformation is its own
inverse: :func:`xor_with_key` descrambles a received frame and scrambles a frame the simulator sends.
Requests that carry key 0 (WS Nova's read request) are written unchanged.

Bounds: one pass over a frame the assembler already limited to ``max_length`` bytes; nothing is kept.
"""

from __future__ import annotations

from bmsgate.errors import FrameError
from bmsgate.protocols.framingspec import ScrambleSpec

__all__ = ["xor_with_key"]


def _index(offset: int, size: int) -> int:
    return offset if offset >= 0 else size + offset


def xor_with_key(frame: bytes, spec: ScrambleSpec) -> bytes:
    """`frame` with every byte of ``[spec.start, spec.end)`` except the key byte XOR-ed with the key byte.

    Raises:
        FrameError: the frame is too short to hold the key byte or the span.
    """
    size = len(frame)
    key_at, start, end = spec.key_at, _index(spec.start, size), _index(spec.end, size)
    if key_at >= size or not 0 <= start <= end <= size:
        raise FrameError(f"frame of {size} bytes too short for its scramble key at {key_at} / span")
    key = frame[key_at]
    if not key:
        return frame
    out = bytearray(frame)
    for index in range(start, end):
        if index != key_at:
            out[index] ^= key
    return bytes(out)

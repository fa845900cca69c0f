"""Hex-text framing (``framing.text: hex``): frames that travel as ASCII hex between two markers (sans-IO).

E&J / AG modules send ``:0082310080…01AB~``: a start marker, two hex digits per byte, an end marker;
Topband modules a one-byte frame type (one of ``starts``) and a fixed number of hex digits, then garbage.
The engine works on *frames* in one form for every protocol — bytes, with the markers kept and the text
decoded (``3A 00 82 31 … 01 AB 7E``) — so field offsets, keys and checksum positions count in bytes as
everywhere else. This module is the edge between that form and the wire:

- :class:`TextFrameAssembler` takes wire chunks (any size, noise, junk chunks, a frame cut by the next one's
  start) and returns checked frames, like :class:`~bmsgate.protocols.framing.FrameAssembler`;
- :func:`to_wire` turns a frame (a request, or a reply the simulator encodes) into what is sent.

A length field or checksum that the vendor defines over the *text* is declared so (``counts: text``,
``over: text``) and checked by the frame checker on the decoded frame. Decoded bytes that are XOR-scrambled
(``scramble``, WS Nova) are descrambled here, before the checker, and scrambled again on the way out
(:mod:`bmsgate.protocols.scrambling`). A BMS that refuses a request with a fixed text (``refusal``,
Offgridtec's ``+RD,Erro`` + NUL) gets a frame of that text, without key and with a status that is not ok.
"""

from __future__ import annotations

import binascii
from typing import Final

from bmsgate.errors import FrameError
from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import (
    AssemblerStats,
    BufferedAssembler,
    Frame,
    FrameChecker,
    drop_noise_keeping_marker_prefix,
)
from bmsgate.protocols.scrambling import xor_with_key

__all__ = ["TextFrameAssembler", "to_wire"]

_BUFFER_FRAMES: Final = 4


def to_wire(frame: bytes, framing: FramingSpec) -> bytes:
    """The wire form of a frame: its markers around the upper-case hex of the (scrambled) bytes between them."""
    size, end = len(framing.start), framing.end or b""
    if framing.scramble is not None and len(frame) > framing.scramble.key_at:
        frame = xor_with_key(frame, framing.scramble)
    body = frame[size : len(frame) - len(end)]
    return frame[:size] + body.hex().upper().encode() + end  # the frame's own marker (Topband's frame type)


class TextFrameAssembler(BufferedAssembler):
    """Reassembles hex-text frames from chunks. One instance per connection/stream."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.text is None or not (framing.end or framing.fixed_length):  # pragma: no cover - FramingSpec
            raise ValueError("TextFrameAssembler needs hex-text framing with an end marker or a fixed length")
        self._checker = checker or FrameChecker(framing)
        self._starts = tuple(framing.starts) or (framing.start,)
        self._marker = len(framing.start)
        self._end = framing.end or b""
        # Without an end marker the frame is its start marker and a fixed number of hex digits.
        self._fixed_wire = None if framing.end else self._marker + 2 * (framing.fixed_length or 0) - 2 * self._marker
        self._ignore = frozenset(framing.ignore_chunks)
        self._strip = tuple(framing.strip_bytes)
        self._scramble = framing.scramble
        self._refusal = framing.refusal
        self._buffer = bytearray()
        # A frame's text is at most twice its bytes: more unframed text than a few frames is garbage.
        self._max_wire = 2 * framing.max_length
        self._limit = self._max_wire * _BUFFER_FRAMES
        self.stats = AssemblerStats()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every frame completed by them (possibly none)."""
        chunk = bytes(chunk)
        if chunk in self._ignore:
            self.stats.junk_chunks += 1
            return []
        for value in self._strip:
            chunk = chunk.replace(value, b"")
        buffer = self._buffer
        buffer += chunk
        frames: list[Frame] = []
        end = self._end
        while buffer:
            index = self._find_start(buffer)
            if index < 0:
                self.stats.noise_bytes += self._drop_noise(buffer)
                break
            if index:
                self.stats.noise_bytes += index
                del buffer[:index]
            if self._refusal is not None and buffer.startswith(self._refusal):
                del buffer[: len(self._refusal)]
                self.stats.frames += 1
                frames.append(Frame(self._refusal, None, False))
                continue
            if self._fixed_wire is not None:
                if len(buffer) < self._fixed_wire:
                    break
                wire = bytes(buffer[: self._fixed_wire])
            else:
                stop = buffer.find(end, self._marker)
                if stop < 0:
                    if len(buffer) > self._max_wire + self._marker + len(end):
                        self._reject(f"no end marker within {self._max_wire} characters")
                        continue
                    break
                wire = bytes(buffer[: stop + len(end)])
            try:
                frame = self._checker.check(self._decoded(wire))
            except FrameError as exc:
                self._reject(str(exc))
                continue
            del buffer[: len(wire)]
            self.stats.frames += 1
            frames.append(frame)
        if len(buffer) > self._limit:
            self.stats.noise_bytes += len(buffer)
            self.stats.last_error = "buffer overflow: dropped unframed bytes"
            buffer.clear()
        return frames

    def _find_start(self, buffer: bytearray) -> int:
        """The index of the earliest start marker in `buffer` (-1: none)."""
        if len(self._starts) == 1:
            return buffer.find(self._starts[0])
        found = [index for index in (buffer.find(marker) for marker in self._starts) if index >= 0]
        return min(found, default=-1)

    def _drop_noise(self, buffer: bytearray) -> int:
        """Drop a buffer without a start marker, keeping a tail that may begin one (bytes dropped)."""
        if len(self._starts) == 1:
            return drop_noise_keeping_marker_prefix(buffer, self._starts[0])
        # Markers of several frame types have one length; keep the longest tail that begins any of them.
        keep = max(
            (n for marker in self._starts for n in range(1, self._marker) if buffer.endswith(marker[:n])), default=0
        )
        dropped = len(buffer) - keep
        del buffer[:dropped]
        return dropped

    def _decoded(self, wire: bytes) -> bytes:
        text = wire[self._marker : len(wire) - len(self._end)]
        if len(text) % 2:
            raise FrameError(f"odd number of hex characters ({len(text)}) between the markers")
        try:
            body = binascii.unhexlify(text)
        except binascii.Error:
            raise FrameError(f"not hex text after the start marker: {text[:16]!r}") from None
        frame = wire[: self._marker] + body + self._end
        return frame if self._scramble is None else xor_with_key(frame, self._scramble)

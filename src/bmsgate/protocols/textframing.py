"""Hex-text framing (``framing.text: hex``): frames that travel as ASCII hex between two markers (sans-IO).

E&J / AG / Topband modules send ``:0082310080…01AB~``: a start marker, two hex digits per byte, an end
marker. The engine works on *frames* in one form for every protocol — bytes, with the markers kept and the
text decoded (``3A 00 82 31 … 01 AB 7E``) — so field offsets, keys and checksum positions count in bytes
as everywhere else. This module is the edge between that form and the wire:

- :class:`TextFrameAssembler` takes wire chunks (any size, noise, junk chunks, a frame cut by the next one's
  start) and returns checked frames, like :class:`~bmsgate.protocols.framing.FrameAssembler`;
- :func:`to_wire` turns a frame (a request, or a reply the simulator encodes) into what is sent.

A length field or checksum that the vendor defines over the *text* is declared so (``counts: text``,
``over: text``) and checked by the frame checker on the decoded frame.
"""

from __future__ import annotations

import binascii
import logging
from typing import Final

from bmsgate.errors import FrameError
from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import AssemblerStats, Frame, FrameChecker, drop_noise_keeping_marker_prefix

__all__ = ["TextFrameAssembler", "to_wire"]

_LOGGER = logging.getLogger(__name__)
_BUFFER_FRAMES: Final = 4


def to_wire(frame: bytes, framing: FramingSpec) -> bytes:
    """The wire form of a frame: its markers around the upper-case hex of the bytes between them."""
    start, end = framing.start, framing.end or b""
    body = frame[len(start) : len(frame) - len(end)]
    return start + body.hex().upper().encode() + end


class TextFrameAssembler:
    """Reassembles hex-text frames from chunks. One instance per connection/stream."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.text is None or not framing.end:  # pragma: no cover - FramingSpec validation guarantees both
            raise ValueError("TextFrameAssembler needs hex-text framing with an end marker")
        self._checker = checker or FrameChecker(framing)
        self._start = framing.start
        self._end = framing.end
        self._ignore = frozenset(framing.ignore_chunks)
        self._buffer = bytearray()
        # A frame's text is at most twice its bytes: more unframed text than a few frames is garbage.
        self._max_wire = 2 * framing.max_length
        self._limit = self._max_wire * _BUFFER_FRAMES
        self.stats = AssemblerStats()

    def reset(self) -> None:
        """Forget any partial frame (e.g. before a new request after a timeout)."""
        self.stats.noise_bytes += len(self._buffer)
        self._buffer.clear()

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every frame completed by them (possibly none)."""
        chunk = bytes(chunk)
        if chunk in self._ignore:
            self.stats.junk_chunks += 1
            return []
        buffer = self._buffer
        buffer += chunk
        frames: list[Frame] = []
        start, end = self._start, self._end
        while buffer:
            index = buffer.find(start)
            if index < 0:
                self.stats.noise_bytes += drop_noise_keeping_marker_prefix(buffer, start)
                break
            if index:
                self.stats.noise_bytes += index
                del buffer[:index]
            stop = buffer.find(end, len(start))
            if stop < 0:
                if len(buffer) > self._max_wire + len(start) + len(end):
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

    def _decoded(self, wire: bytes) -> bytes:
        text = wire[len(self._start) : len(wire) - len(self._end)]
        if len(text) % 2:
            raise FrameError(f"odd number of hex characters ({len(text)}) between the markers")
        try:
            body = binascii.unhexlify(text)
        except binascii.Error:
            raise FrameError(f"not hex text between the markers: {text[:16]!r}") from None
        return self._start + body + self._end

    def _reject(self, reason: str) -> None:
        # Skip only the start marker: the real frame may start inside the bad candidate (a cut frame).
        self.stats.rejected += 1
        self.stats.last_error = reason
        self.stats.noise_bytes += 1
        del self._buffer[:1]
        _LOGGER.debug("dropped candidate frame: %s", reason)

"""Byte-stuffed frames (``framing.escape``): an escape byte makes the next byte data (sans-IO; engine 5).

MyVolta packs stream frames as ``55 55`` + body + ``04 04``, with the escape (DLE) byte ``05`` in front of a
body byte that would otherwise read as control (public sources: the escape itself and the marker bytes).
The engine keeps one frame form, the markers around the **unescaped** body, so the checker, the key, the
fields and the encoder count bytes as the pack means them; this module is the edge to the wire:

- :class:`StuffedFrameAssembler` finds the start marker, removes the escapes, ends a frame at the first end
  marker made of unescaped bytes, and checks the frame (length, end marker, checksum);
- :func:`to_wire` puts an escape in front of every body byte that is the escape or a byte of a marker.

Bounds: a body longer than ``max_length`` (a lost end marker) is dropped and the search starts again, so
the assembler never holds more than one maximum-length frame; noise outside frames is counted, not kept.
"""

from __future__ import annotations

import logging

from bmsgate.errors import FrameError
from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import AssemblerStats, Frame, FrameChecker

__all__ = ["StuffedFrameAssembler", "to_wire"]

_LOGGER = logging.getLogger(__name__)


class StuffedFrameAssembler:
    """Frames between start and end markers whose body is byte-stuffed with ``framing.escape``."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.escape is None or framing.end is None:
            raise ValueError("a stuffed framing needs 'escape' and 'end'")
        self._checker = checker or FrameChecker(framing)
        self._start = framing.start
        self._end = framing.end
        self._escape = framing.escape[0]
        self._max = framing.max_length
        self._ignore = frozenset(framing.ignore_chunks)
        self.stats = AssemblerStats()
        self.reset()

    def reset(self) -> None:
        """Forget a frame begun (after a reconnect)."""
        self._frame = bytearray()
        self._in_frame = False
        self._escaped = False
        self._plain = 0  # unescaped bytes at the end of the frame: only they can form the end marker
        self._outside = bytearray()  # the last bytes outside a frame, as long as a start marker at most

    @property
    def buffered(self) -> int:
        """Bytes held: the frame begun, or the tail that may begin a start marker."""
        return len(self._frame) if self._in_frame else len(self._outside)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return the frames they complete (bad ones are dropped with the reason)."""
        data = bytes(chunk)
        if data in self._ignore:
            self.stats.junk_chunks += 1
            return []
        frames: list[Frame] = []
        for byte in data:
            if not self._in_frame:
                self._seek_start(byte)
                continue
            if self._escaped:
                self._escaped = False
                self._frame.append(byte)
                self._plain = 0
            elif byte == self._escape:
                self._escaped = True
                continue
            else:
                self._frame.append(byte)
                self._plain += 1
                if self._plain >= len(self._end) and self._frame.endswith(self._end):
                    self._finish(frames)
                    continue
            if len(self._frame) > self._max:
                self._drop(f"no end marker within {self._max} bytes")
        return frames

    def _seek_start(self, byte: int) -> None:
        self._outside.append(byte)
        if self._outside.endswith(self._start):
            self.stats.noise_bytes += len(self._outside) - len(self._start)
            self._outside.clear()
            self._frame = bytearray(self._start)
            self._in_frame, self._escaped, self._plain = True, False, 0
        elif len(self._outside) >= len(self._start):
            self.stats.noise_bytes += 1
            del self._outside[0]

    def _finish(self, frames: list[Frame]) -> None:
        raw = bytes(self._frame)
        self._in_frame = False
        self._frame = bytearray()
        try:
            frames.append(self._checker.check(raw))
        except FrameError as exc:
            self._reject(len(raw), str(exc))
            return
        self.stats.frames += 1

    def _drop(self, reason: str) -> None:
        size = len(self._frame)
        self._in_frame = False
        self._frame = bytearray()
        self._reject(size, reason)

    def _reject(self, size: int, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.noise_bytes += size
        self.stats.last_error = reason
        _LOGGER.debug("dropped frame: %s", reason)


def to_wire(frame: bytes, framing: FramingSpec) -> bytes:
    """What the BMS sends for `frame` (markers around the body): the body with its control bytes escaped."""
    if framing.escape is None or framing.end is None:
        return frame
    start, end, escape = framing.start, framing.end, framing.escape[0]
    if not (frame.startswith(start) and frame.endswith(end)) or len(frame) < len(start) + len(end):
        return frame
    control = {escape, *start, *end}
    wire = bytearray(start)
    for byte in frame[len(start) : len(frame) - len(end)]:
        if byte in control:
            wire.append(escape)
        wire.append(byte)
    return bytes(wire + end)

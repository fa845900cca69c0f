"""Frames without a start marker on the wire (``framing.marker_on_wire: false``; sans-IO; engine 5).

Super-B packs notify 20-byte frames that begin with a data byte: no marker, no length field, no checksum;
one notification is one frame. The engine's frame form always begins with ``framing.start`` (the checker,
the key and the encoder count on it), so this module is the edge between that form and the wire:

- :class:`UnmarkedChunkAssembler` puts ``start`` in front of every received chunk and checks the result as
  one whole frame (``frame_per_chunk``: ``min_length``..``max_length``, marker included);
- :func:`to_wire` leaves the marker out of a frame the simulator encodes.

Nothing is carried over between chunks, so memory is one chunk; a chunk of the wrong size is dropped with
its reason in the statistics.
"""

from __future__ import annotations

from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import AssemblerStats, ChunkFrameAssembler, Frame, FrameChecker

__all__ = ["UnmarkedChunkAssembler", "to_wire"]


class UnmarkedChunkAssembler:
    """One frame per chunk, the start marker (absent on the wire) put in front before the checks."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        self._marker = framing.start
        self._ignore = frozenset(framing.ignore_chunks)
        self._chunks = ChunkFrameAssembler(framing, checker=checker)

    @property
    def stats(self) -> AssemblerStats:
        """Frames, rejected chunks and the last reason (counts of the marked chunks)."""
        return self._chunks.stats

    def reset(self) -> None:
        """Nothing is kept between chunks: nothing to forget."""

    @property
    def buffered(self) -> int:
        """Always 0: a chunk is a frame or noise."""
        return 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Check one received chunk, marker put in front, as one frame (a chunk that is no frame is dropped)."""
        wire = bytes(chunk)
        if wire in self._ignore:
            self._chunks.stats.junk_chunks += 1
            return []
        return self._chunks.feed(self._marker + wire)


def to_wire(frame: bytes, framing: FramingSpec) -> bytes:
    """What the BMS sends for `frame`: the frame without its start marker."""
    return frame[len(framing.start) :] if frame.startswith(framing.start) else frame

"""Fixed-length frames without a start marker in a byte stream, found by their checksum (sans-IO; engine 6).

123\\SmartBMS packs push a 58-byte status frame every second through a BLE UART bridge: no marker, no
length field, only a one-byte sum at the end, and the bridge cuts the stream into notifications that do
not follow the frames. ``framing.marker_on_wire: false`` with a ``fixed_length`` (instead of
``frame_per_chunk``) turns this on. The engine's frame form always begins with ``framing.start``, so, as
in `bmsgate.protocols.unmarkedframing`, the marker is put in front of every candidate window before the
checker sees it, and `bmsgate.protocols.unmarkedframing.to_wire` leaves it out again.

Finding the frames:

- *In step* (after a frame, and at the very start of a stream): the window right there is checked; a
  valid one is a frame.
- *Searching* (a window in step failed, or bytes were skipped): the window is moved one byte at a time.
  Because a one-byte sum holds by chance for one window in 256, a window found while searching is taken
  only when the window right behind it is a valid frame too (then both are frames and the stream is in
  step again); until that window has arrived the bytes wait in the buffer.

Each loss of step counts once as a rejected frame (with the checksum error as its reason) and every
skipped byte as noise. The buffer never holds more than two frames' bytes plus one chunk, and each
received byte is the start of at most two window checks.
"""

from __future__ import annotations

import logging
from typing import Literal

from bmsgate.errors import FrameError
from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import AssemblerStats, BufferedAssembler, Frame, FrameChecker

__all__ = ["UnmarkedStreamAssembler"]

_LOGGER = logging.getLogger(__name__)


class UnmarkedStreamAssembler(BufferedAssembler):
    """Fixed-length frames cut from a stream where their checksum holds, the marker put in front."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.fixed_length is None or framing.checksum is None:
            raise ValueError("an unmarked stream needs 'fixed_length' and a 'checksum'")
        spec = framing.checksum
        algorithm = CHECKSUMS[spec.algorithm]
        self._compute = algorithm.compute
        self._covered = slice(spec.start, spec.end)
        stored_end = spec.at + algorithm.size
        self._stored = slice(spec.at, None if spec.at < 0 and stored_end == 0 else stored_end)
        self._stored_order: Literal["big", "little"] = spec.endian
        self._checker = checker or FrameChecker(framing)
        self._marker = framing.start
        self._body = framing.fixed_length - len(framing.start)
        self._ignore = frozenset(framing.ignore_chunks)
        self._buffer = bytearray()
        self._in_step = True
        self.stats = AssemblerStats()

    def reset(self) -> None:
        """Forget buffered bytes; the next byte received is taken as a frame's first (in step)."""
        super().reset()
        self._in_step = True

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return every frame they complete (possibly none)."""
        if self._ignore and bytes(chunk) in self._ignore:
            self.stats.junk_chunks += 1
            return []
        buffer = self._buffer
        buffer += chunk
        body = self._body
        frames: list[Frame] = []
        position = 0
        while len(buffer) - position >= body:
            frame, error = self._window(position)
            if self._in_step:
                if frame is not None:
                    frames.append(frame)
                    position += body
                    continue
                self._lose_step(error)
                position += 1
                continue
            if frame is None:
                position += 1
                self.stats.noise_bytes += 1
                continue
            if len(buffer) - position < 2 * body:
                break  # found while searching: wait for the window behind it
            follower, _ = self._window(position + body)
            if follower is None:
                position += 1
                self.stats.noise_bytes += 1
                continue
            frames += (frame, follower)
            position += 2 * body
            self._in_step = True
        del buffer[:position]
        self.stats.frames += len(frames)
        return frames

    def _window(self, position: int) -> tuple[Frame | None, str]:
        candidate = self._marker + bytes(self._buffer[position : position + self._body])
        # The checksum first, without an exception: while searching, nearly every window fails it.
        stored = int.from_bytes(candidate[self._stored], self._stored_order)
        computed = self._compute(candidate[self._covered])
        if computed != stored:
            return None, f"checksum mismatch: frame says {stored:#04x}, computed {computed:#04x}"
        try:
            return self._checker.check(candidate), ""
        except FrameError as exc:
            return None, str(exc)

    def _lose_step(self, reason: str) -> None:
        self._in_step = False
        self.stats.rejected += 1
        self.stats.noise_bytes += 1
        self.stats.last_error = reason
        _LOGGER.debug("unmarked stream out of step: %s", reason)

"""Frames carried in numbered, acknowledged pages (``framing.pages``; sans-IO, engine 6).

D-powercore packs send a reply as 20-byte pages: ``length | page << 4 | count | data | padding``, where
`length` is the number of data bytes in that page and pages 1..count carry one frame
(``3A 05 03 <command> <u16 data length> … <sum16> 0D 0A``). The receiver writes every page back with bit 7 of
its length byte set (an acknowledgement); the pack acknowledges what it receives the same way. The engine
keeps one frame form, the pages' data joined, so the checker, the key, the fields and the encoder count bytes
as the frame means them; this module is the edge to the wire:

- :class:`PagedFrameAssembler` takes one page per chunk, keeps the acknowledgements to write
  (:meth:`PagedFrameAssembler.take_acks`, written by the poll session), joins pages 1..count and checks the
  frame;
- :func:`to_wire` splits a frame into pages (a request, or a reply the simulator sends).

Bounds: a frame is at most 15 pages (the count is a nibble), so the assembler holds at most 15 pages' data
and acknowledgements not yet taken; a page out of order drops the frame begun.
"""

from __future__ import annotations

import logging
from typing import Final

from bmsgate.errors import FrameError
from bmsgate.protocols.framing import AssemblerStats, Frame, FrameChecker
from bmsgate.protocols.framingspec import FramingSpec

__all__ = ["PagedFrameAssembler", "to_wire"]

_LOGGER = logging.getLogger(__name__)

_MAX_PAGES: Final = 15


class PagedFrameAssembler:
    """Frames joined from fixed-size pages, each page acknowledged (``framing.pages``)."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.pages is None:
            raise ValueError("a paged framing needs 'pages'")
        self._checker = checker or FrameChecker(framing)
        self._size = framing.pages.size
        self._flag = framing.pages.ack_flag
        self._ignore = frozenset(framing.ignore_chunks)
        self.stats = AssemblerStats()
        self._acks: list[bytes] = []
        self.reset()

    def reset(self) -> None:
        """Forget a frame begun and acknowledgements not yet written (after a reconnect)."""
        self._frame = bytearray()
        self._next = 0  # the page number expected next; 0: none (wait for a page 1)
        self._acks = []

    @property
    def buffered(self) -> int:
        """Data bytes of the frame begun."""
        return len(self._frame)

    def take_acks(self) -> list[bytes]:
        """The acknowledgements of the pages received since the last call, to write in this order."""
        acks, self._acks = self._acks, []
        return acks

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received pages (one per notification, or several joined); return the frames they complete.

        Bad pages are dropped with the reason; a chunk that is not a whole number of pages is dropped whole.
        """
        data = bytes(chunk)
        if data in self._ignore:
            self.stats.junk_chunks += 1
            return []
        if not data or len(data) % self._size:
            self._reject(len(data), f"chunk of {len(data)} bytes, not pages of {self._size}")
            return []
        frames: list[Frame] = []
        for start in range(0, len(data), self._size):
            frames += self._page(data[start : start + self._size])
        return frames

    def _page(self, page: bytes) -> list[Frame]:
        length = page[0]
        if length & self._flag:  # the pack acknowledging a page we wrote
            self.stats.junk_chunks += 1
            return []
        if len(self._acks) < _MAX_PAGES:
            self._acks.append(bytes([length | self._flag]) + page[1:])
        number, count = page[1] >> 4, page[1] & 0x0F
        if length > self._size - 2 or not 1 <= number <= count:
            self._reject(self._size, f"page header {page[:2].hex()} is not a page of a frame")
            return []
        if number == 1:
            self._drop_begun("a new page 1 before the last page")
        elif number != self._next:
            self._drop_begun(f"page {number} of {count} out of order")
            self._reject(self._size, f"page {number} of {count} without the pages before it")
            return []
        self._frame += page[2 : 2 + length]
        self._next = number + 1
        if number < count:
            return []
        raw = bytes(self._frame)
        self._frame.clear()
        self._next = 0
        try:
            frame = self._checker.check(raw)
        except FrameError as exc:
            self._reject(len(raw), str(exc))
            return []
        self.stats.frames += 1
        return [frame]

    def _drop_begun(self, reason: str) -> None:
        if self._next:
            self._reject(len(self._frame), reason)
        self._frame.clear()
        self._next = 0

    def _reject(self, size: int, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.noise_bytes += size
        self.stats.last_error = reason
        _LOGGER.debug("dropped page(s): %s", reason)


def to_wire(frame: bytes, framing: FramingSpec, *, request: bool = True) -> bytes:
    """The pages that carry `frame`, joined (one notification or write each, `pages.size` bytes).

    A request's length bytes add `pages.request_length_add`; a reply's (the simulator) count the data only.

    Raises:
        ValueError: the frame needs more than 15 pages (`FramingSpec` keeps `max_length` below that).
    """
    spec = framing.pages
    if spec is None or not frame:
        return frame
    room = spec.size - 2
    parts = [frame[start : start + room] for start in range(0, len(frame), room)]
    if len(parts) > _MAX_PAGES:
        raise ValueError(f"a frame of {len(frame)} bytes needs more than {_MAX_PAGES} pages")
    add = spec.request_length_add if request else 0
    wire = bytearray()
    for number, part in enumerate(parts, start=1):
        page = bytes([len(part) + add, number << 4 | len(parts)]) + part
        wire += page + bytes(spec.size - len(page))
    return bytes(wire)

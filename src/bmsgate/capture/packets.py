"""What the container readers hand on: link-layer packets with time, direction and file offset.

The container formats (btsnoop, pcap, pcapng) differ only in how they wrap packets; everything above
them works on :class:`RawPacket`. :class:`ByteReader` is the bounds-checked cursor all decoders use, so
a short or garbled packet becomes :class:`MalformedPacket` (caught per packet) instead of an
``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import dataclasses
import enum
import mmap
import struct
from collections.abc import Callable
from typing import Final, TypeAlias

from bmsgate.errors import CaptureError

__all__ = [
    "MAX_EMPTY_RECORDS",
    "ByteReader",
    "CaptureBytes",
    "CaptureFile",
    "Direction",
    "LinkType",
    "MalformedPacket",
    "EmptyRecordGuard",
    "Notes",
    "Progress",
    "RawPacket",
    "truncation_warning",
]


#: A whole capture in memory, or mapped from its file so that only the pages read are loaded.
CaptureBytes: TypeAlias = bytes | mmap.mmap

#: No HCI or link-layer packet is empty, so real captures hold no empty records; a run of this many is a
#: zero-filled or overwritten file, refused before millions of empty packets pile up.
MAX_EMPTY_RECORDS: Final = 64


class LinkType(enum.IntEnum):
    """Link types bmsgate understands (pcap LINKTYPE_* numbers; btsnoop datalinks map onto them)."""

    BLUETOOTH_HCI_H4 = 187
    BLUETOOTH_HCI_H4_WITH_PHDR = 201
    BLUETOOTH_LE_LL_WITH_PHDR = 256
    NORDIC_BLE = 272
    #: btsnoop datalink 1001: HCI packets without the H4 type byte; the record flags say which type.
    BTSNOOP_HCI_UNENCAPSULATED = 1001


class Direction(enum.StrEnum):
    """Which way a packet travelled, seen from the phone/host that talks to the BMS."""

    #: host (phone app) → controller/BMS
    SENT = "tx"
    #: controller/BMS → host
    RECEIVED = "rx"
    #: the capture does not say (some over-the-air captures)
    UNKNOWN = "?"


@dataclasses.dataclass(frozen=True, slots=True)
class RawPacket:
    """One captured link-layer packet.

    Attributes:
        timestamp: seconds since the Unix epoch (btsnoop times are converted).
        link_type: how to interpret `data`.
        data: the captured bytes (possibly cut short by the capture's snapshot length).
        offset: byte offset of the record in the capture file (for messages).
        direction: what the container says about the direction, if anything.
        is_command_or_event: btsnoop flag bit 1 (only meaningful for un-encapsulated HCI).
        truncated: the capture kept fewer bytes than were on the wire.
    """

    timestamp: float
    link_type: int
    data: bytes
    offset: int
    direction: Direction = Direction.UNKNOWN
    is_command_or_event: bool = False
    truncated: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class CaptureFile:
    """The packets of one capture file plus what went wrong while reading it.

    Attributes:
        format: ``btsnoop``, ``pcap`` or ``pcapng``.
        packets: in file order.
        warnings: problems that did not stop reading (e.g. a truncated last record).
    """

    format: str
    packets: tuple[RawPacket, ...]
    warnings: tuple[str, ...] = ()


class MalformedPacket(Exception):
    """A packet is shorter than its own headers claim, or otherwise impossible (internal)."""


_U16LE: Final = struct.Struct("<H")
_U32LE: Final = struct.Struct("<I")


class ByteReader:
    """A bounds-checked little-endian cursor over one packet."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes, position: int = 0) -> None:
        self._data = data
        self._position = position

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self._position

    def take(self, count: int) -> bytes:
        """The next `count` bytes.

        Raises:
            MalformedPacket: fewer bytes are left.
        """
        if count < 0 or count > self.remaining:
            raise MalformedPacket(f"needs {count} bytes at position {self._position}, has {self.remaining}")
        start = self._position
        self._position += count
        return self._data[start : self._position]

    def rest(self) -> bytes:
        """Everything not read yet."""
        return self.take(self.remaining)

    def skip(self, count: int) -> None:
        """Step over `count` bytes."""
        self.take(count)

    def u8(self) -> int:
        """One unsigned byte."""
        return self.take(1)[0]

    def u16(self) -> int:
        """An unsigned little-endian 16-bit value."""
        value: int = _U16LE.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        """An unsigned little-endian 32-bit value."""
        value: int = _U32LE.unpack(self.take(4))[0]
        return value


#: Told how far long work has got: (what is being done, units done, units in all).
Progress: TypeAlias = Callable[[str, int, int], None]


def truncation_warning(source: str, offset: int, what: str, needed: int, present: int) -> str:
    """The warning for a capture that ends in the middle of a record or block."""
    return (
        f"{source}: truncated {what} at byte offset {offset} ({present} of {needed} bytes present); "
        "kept the packets before it"
    )


class Notes:
    """Collects per-packet problems, counted per message, for the warnings of a report."""

    __slots__ = ("_counts", "_first_offsets", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._counts: dict[str, int] = {}
        self._first_offsets: dict[str, int] = {}

    def add(self, message: str, offset: int) -> None:
        """Record one occurrence of `message` in the record at byte `offset`."""
        self._counts[message] = self._counts.get(message, 0) + 1
        self._first_offsets.setdefault(message, offset)

    def warnings(self) -> list[str]:
        """One line per distinct message, with how often and where it first happened."""
        lines = []
        for message, count in self._counts.items():
            times = f"{count} times, first" if count > 1 else "once,"
            lines.append(
                f"{self._source}: {message} ({times} in the record at byte offset {self._first_offsets[message]})"
            )
        return lines


class EmptyRecordGuard:
    """Counts consecutive empty records and refuses the file after :data:`MAX_EMPTY_RECORDS` of them."""

    __slots__ = ("_first_offset", "_run", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._run = 0
        self._first_offset = 0

    def check(self, length: int, offset: int) -> None:
        """Note a record of `length` captured bytes at byte `offset`.

        Raises:
            CaptureError: too many empty records in a row.
        """
        if length:
            self._run = 0
            return
        if not self._run:
            self._first_offset = offset
        self._run += 1
        if self._run >= MAX_EMPTY_RECORDS:
            raise CaptureError(
                f"{self._run} empty records in a row from byte offset {self._first_offset}: "
                "the file is damaged (zero-filled or overwritten)",
                source=self._source,
                offset=self._first_offset,
            )

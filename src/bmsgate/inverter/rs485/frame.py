"""Pylontech LV RS485 frames: ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``\\r`` in hex ASCII (pure).

Layout, LCHKSUM and CHKSUM follow PYLON low voltage Protocol RS485 V3.3 as recomputed in the facts file
(../shared/inverter/rs485-and-more.md §1.2-1.3). LCHKSUM is computed over the three LENID *nibbles*
and always fits one hex digit: two bugs seen in public implementations (a 5-digit LENGTH when the
nibble sum is a multiple of 16, summing LENID bytes instead of nibbles) are ruled out by construction
and by tests.

:class:`FrameAssembler` cuts a byte stream into frames; anything malformed (no ``~``, odd or non-hex
characters, a wrong LENGTH or CHKSUM, too long) raises :class:`~bmsgate.errors.FrameError` from
:func:`parse_frame` and is reported by the assembler as a rejected frame, never as an exception of
another type.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from bmsgate.errors import FrameError

__all__ = [
    "MAX_FRAME",
    "MAX_INFO_CHARS",
    "SOI",
    "EOI",
    "FrameAssembler",
    "PylonFrame",
    "build_frame",
    "checksum",
    "length_field",
    "parse_frame",
]

SOI: Final = 0x7E
EOI: Final = 0x0D
MAX_INFO_CHARS: Final = 0xFFF
"""LENID is 12 bits: at most 4095 INFO characters."""
MAX_FRAME: Final = 1 + 12 + MAX_INFO_CHARS + 4 + 1
"""Longest legal frame in bytes (SOI, header, INFO, CHKSUM, EOI)."""
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")


@dataclasses.dataclass(frozen=True, slots=True)
class PylonFrame:
    """One frame with its fields decoded.

    Attributes:
        ver: protocol version byte.
        adr: address.
        cid1: device type (0x46 = battery).
        cid2: command in a request, return code (RTN) in a reply.
        info: the INFO bytes (decoded from their hex text).
    """

    ver: int
    adr: int
    cid1: int
    cid2: int
    info: bytes = b""

    def encode(self) -> bytes:
        """The frame on the wire."""
        return build_frame(self.ver, self.adr, self.cid1, self.cid2, self.info)


def length_field(info_chars: int) -> int:
    """LENGTH for `info_chars` INFO characters: LCHKSUM nibble + 12-bit LENID.

    Raises:
        ValueError: more than 4095 characters.
    """
    if not 0 <= info_chars <= MAX_INFO_CHARS:
        raise ValueError(f"LENID {info_chars} does not fit 12 bits")
    nibbles = (info_chars >> 8) + ((info_chars >> 4) & 0xF) + (info_chars & 0xF)
    lchksum = -nibbles % 16
    return (lchksum << 12) | info_chars


def checksum(text: bytes) -> int:
    """CHKSUM: −(sum of the ASCII values of everything between ``~`` and CHKSUM) mod 65536."""
    return -sum(text) % 0x10000


def build_frame(ver: int, adr: int, cid1: int, cid2: int, info: bytes = b"") -> bytes:
    """A complete frame (``~`` … ``\\r``) with LENGTH and CHKSUM filled in.

    Raises:
        ValueError: a header byte outside 0-255 or INFO longer than LENID allows.
    """
    for name, value in (("ver", ver), ("adr", adr), ("cid1", cid1), ("cid2", cid2)):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} {value} is not a byte")
    info_text = info.hex().upper().encode("ascii")
    body = b"%02X%02X%02X%02X%04X" % (ver, adr, cid1, cid2, length_field(len(info_text))) + info_text
    return b"~" + body + b"%04X" % checksum(body) + b"\r"


def parse_frame(frame: bytes) -> PylonFrame:
    """Check and decode one frame (``~`` … ``\\r``, both included).

    Raises:
        FrameError: any deviation: markers, length, characters, LCHKSUM, LENID, CHKSUM.
    """
    if len(frame) < 18 or frame[0] != SOI or frame[-1] != EOI:
        raise FrameError("not a ~...\\r frame of at least 18 bytes")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes is longer than any legal frame")
    text = frame[1:-1]
    if not _HEX.issuperset(text):
        raise FrameError("a character that is not a hex digit")
    body, sent = text[:-4], int(text[-4:], 16)
    length = int(body[8:12], 16)
    lenid = length & 0xFFF
    if length_field(lenid) != length:
        raise FrameError(f"LCHKSUM wrong in LENGTH {length:04X}")
    info_text = body[12:]
    if len(info_text) != lenid:
        raise FrameError(f"LENID says {lenid} INFO characters, the frame has {len(info_text)}")
    if lenid % 2:
        raise FrameError(f"odd LENID {lenid}: INFO is two characters per byte")
    if checksum(body) != sent:
        raise FrameError(f"CHKSUM {sent:04X} wrong (computed {checksum(body):04X})")
    header = bytes.fromhex(body[:8].decode("ascii"))
    return PylonFrame(header[0], header[1], header[2], header[3], bytes.fromhex(info_text.decode("ascii")))


class FrameAssembler:
    """Cuts received bytes into frames; bounded, so noise can never grow it.

    Bytes before a ``~`` are dropped. A ``~`` inside a frame starts over (the earlier start was noise
    or a frame cut short). A candidate longer than :data:`MAX_FRAME` is dropped.

    Attributes:
        rejected: candidates that ended in ``\\r`` but did not parse (counted; noise is DEBUG-level).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_frame = False
        self.rejected = 0
        self.last_error: FrameError | None = None

    def feed(self, chunk: bytes) -> list[PylonFrame]:
        """The frames completed by `chunk`, in order; malformed ones are counted and skipped."""
        frames: list[PylonFrame] = []
        for byte in chunk:
            if byte == SOI:
                self._buffer = bytearray(b"~")
                self._in_frame = True
                continue
            if not self._in_frame:
                continue
            self._buffer.append(byte)
            if byte == EOI:
                candidate = bytes(self._buffer)
                self._buffer.clear()
                self._in_frame = False
                try:
                    frames.append(parse_frame(candidate))
                except FrameError as exc:
                    self.rejected += 1
                    self.last_error = exc
            elif len(self._buffer) >= MAX_FRAME:
                self._buffer.clear()
                self._in_frame = False
                self.rejected += 1
        return frames

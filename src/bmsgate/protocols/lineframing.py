"""Delimited-text line framing (``framing.text: lines``): CSV lines read by column (sans-IO; engine 5).

Lithionics packs stream ``1399,350,350,350,349,55,48,-3,99,000000\\r\\n`` and ``&,1,319,…\\r\\n`` lines,
with ``ERROR`` lines between them. As for hex text (:mod:`bmsgate.protocols.textframing`), the engine keeps
one binary frame form, so this module is the edge between it and the wire:

- :class:`LineFrameAssembler` cuts received text at ``framing.end`` (the line terminator), skips blank
  lines and lines of no declared kind (noise, counted), and turns each line of a kind into the frame
  ``start`` + key + one slot per declared column + ``end`` (:mod:`bmsgate.protocols.linespec`);
- :func:`to_wire` turns such a frame (a line the simulator encodes) back into its text.

Bounds: a line longer than ``max_length`` characters is dropped whole, up to its terminator (the buffer
never holds more than that plus one chunk; the tail of an over-long line is never read as a line); a
number's text is at most :data:`_MAX_CHARS` characters and must fit its 32-bit slot. A line of a kind
whose read column is not a number of its form is refused with a :class:`~bmsgate.errors.FrameError`
reason in the statistics; the lines after it are unaffected.

Engine 7 (123\\SmartBMS gen3): signed hex columns (``+0014``), a ``no_value`` character (``X``) that reads
as absent, kinds that read no column (``OK``), and ``refusal`` kinds (``NA``), whose line becomes a frame
without key whose status is not ok: the poll session treats it as the refusal of the request just sent.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from bmsgate.errors import FrameError
from bmsgate.protocols.definition import FramingSpec
from bmsgate.protocols.framing import AssemblerStats, Frame, FrameChecker
from bmsgate.protocols.linespec import ABSENT, SLOT_SIZE, LineColumn, LineKind, LinesSpec

__all__ = ["LineFrameAssembler", "frame_of_line", "to_wire"]

_MAX_CHARS: Final = 20
_DECIMAL: Final = re.compile(r"([-+]?)([0-9]+)(?:\.([0-9]+))?")
_HEX: Final = re.compile(r"[0-9A-Fa-f]{1,8}")
_SIGNED_HEX: Final = re.compile(r"([-+]?)([0-9A-Fa-f]{1,8})")
_SIGNED: Final = struct.Struct(">i")
_UNSIGNED: Final = struct.Struct(">I")
_ABSENT_SLOT: Final = _SIGNED.pack(ABSENT)


def _slot(text: str, column: LineColumn, no_value: str | None = None) -> bytes:
    """One column's slot (FrameError: not a number of the column's form, or too large for 32 bits)."""
    if not text:
        return _ABSENT_SLOT
    if len(text) > _MAX_CHARS:
        raise FrameError(f"column {column.index} has {len(text)} characters, more than a number has")
    if no_value is not None and not text.lstrip("+-").strip(no_value) and text.lstrip("+-"):
        return _ABSENT_SLOT
    if column.signed:
        signed = _SIGNED_HEX.fullmatch(text)
        if signed is None:
            raise FrameError(f"column {column.index} is {text!r}, not a signed hex number of at most 8 digits")
        value = int(signed[2], 16)
        value = -value if signed[1] == "-" else value
        if not ABSENT < value < 2**31:
            raise FrameError(f"column {column.index} is {text!r}, outside the 32-bit range")
        return _SIGNED.pack(value)
    if column.base == 16:
        if not _HEX.fullmatch(text):
            raise FrameError(f"column {column.index} is {text!r}, not a hex number of at most 8 digits")
        return _UNSIGNED.pack(int(text, 16))
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise FrameError(f"column {column.index} is {text!r}, not a decimal number")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > column.decimals:
        raise FrameError(
            f"column {column.index} is {text!r}: more than the {column.decimals} decimals the definition reads"
        )
    value = int(whole + fraction.ljust(column.decimals, "0"))
    value = -value if sign == "-" else value
    if not ABSENT < value < 2**31:
        raise FrameError(f"column {column.index} is {text!r}, outside the 32-bit range")
    return _SIGNED.pack(value)


def kind_of(columns: list[str], spec: LinesSpec) -> LineKind | None:
    """The first kind the split line is of (None: noise)."""
    for kind in spec.kinds:
        if len(columns) >= kind.min_columns and (kind.first is None or columns[0] == kind.first):
            return kind
    return None


def frame_of_line(line: bytes, framing: FramingSpec) -> bytes | None:
    """The frame of one line without its terminator (None: a blank line or one of no kind).

    Raises:
        FrameError: the line is not ASCII, or a column it is read by is not a number of its form.
    """
    spec = framing.lines
    assert spec is not None  # guaranteed by the caller's framing
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise FrameError(f"line is not ASCII text (byte {exc.start})") from None
    if not text:
        return None
    columns = [column.strip() for column in text.split(spec.separator)]
    kind = kind_of(columns, spec)
    if kind is None:
        return None
    out = bytearray(framing.start)
    out.append(kind.key)
    for column in kind.columns:
        out += _slot(columns[column.index], column, spec.no_value) if column.index < len(columns) else _ABSENT_SLOT
    out += framing.end or b""
    return bytes(out)


def to_wire(frame: bytes, framing: FramingSpec) -> bytes:
    """The text line of a frame ``start`` + key + slots + ``end``; anything else as it is."""
    spec = framing.lines
    marker, end = len(framing.start), framing.end or b""
    if spec is None or len(frame) <= marker or not frame.startswith(framing.start):
        return frame
    kind = next((kind for kind in spec.kinds if kind.key == frame[marker]), None)
    if kind is None:
        return frame
    columns = ["0"] * kind.width
    if kind.first is not None:
        columns[0] = kind.first
    slots = frame[marker + 1 : len(frame) - len(end)]
    for number, column in enumerate(kind.columns):
        raw = slots[number * SLOT_SIZE : (number + 1) * SLOT_SIZE]
        if len(raw) < SLOT_SIZE:
            break  # a frame the encoder ended before this column: it keeps its "0"
        columns[column.index] = _text(raw, column)
    return spec.separator.join(columns).encode("ascii") + end


def _text(raw: bytes, column: LineColumn) -> str:
    if raw == _ABSENT_SLOT:
        return ""
    if column.signed:
        (value,) = _SIGNED.unpack(raw)
        return f"{'-' if value < 0 else '+'}{abs(value):04X}"
    if column.base == 16:
        return f"{_UNSIGNED.unpack(raw)[0]:X}"
    (value,) = _SIGNED.unpack(raw)
    if not column.decimals:
        return str(value)
    whole, fraction = divmod(abs(value), 10**column.decimals)
    return f"{'-' if value < 0 else ''}{whole}.{fraction:0{column.decimals}d}"


class LineFrameAssembler:
    """Cuts received text into lines and turns each line of a kind into a frame. One per connection."""

    def __init__(self, framing: FramingSpec, *, checker: FrameChecker | None = None) -> None:
        if framing.lines is None or not framing.end:  # pragma: no cover - FramingSpec validation
            raise ValueError("LineFrameAssembler needs 'text: lines' framing with a terminator ('end')")
        self._framing = framing
        self._checker = checker or FrameChecker(framing)
        self._ignore = frozenset(framing.ignore_chunks)
        self._terminator = framing.end
        self._max_line = framing.max_length
        self._refusals = frozenset(kind.key for kind in framing.lines.kinds if kind.refusal)
        self._key_at = len(framing.start)
        self._buffer = bytearray()
        self._overflowed = False
        """The buffer was dropped inside an over-long line: its rest up to the next terminator is no line."""
        self.stats = AssemblerStats()

    def reset(self) -> None:
        """Forget a partial line (e.g. after a reconnect)."""
        self.stats.noise_bytes += len(self._buffer)
        self._buffer.clear()
        self._overflowed = False

    @property
    def buffered(self) -> int:
        """Bytes of a line waiting for its terminator."""
        return len(self._buffer)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return the frames of every line of a kind they complete (possibly none)."""
        chunk = bytes(chunk)
        if chunk in self._ignore:
            self.stats.junk_chunks += 1
            return []
        buffer = self._buffer
        buffer += chunk
        frames: list[Frame] = []
        terminator = self._terminator
        while (end := buffer.find(terminator)) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + len(terminator)]
            if self._overflowed:
                # The end of the over-long line already refused: whatever its tail looks like, not a line.
                self._overflowed = False
                self.stats.noise_bytes += len(line) + len(terminator)
                continue
            if len(line) > self._max_line:
                self._refuse(
                    len(line) + len(terminator), f"a line of {len(line)} characters (at most {self._max_line})"
                )
                continue
            try:
                raw = frame_of_line(line, self._framing)
                if raw is None:
                    self.stats.noise_bytes += len(line) + len(terminator)
                    continue
                # A refusal (NA) answers whatever request was just sent: no key, and a status that is not ok.
                refused = raw[self._key_at] in self._refusals
                frame = Frame(raw, None, False) if refused else self._checker.check(raw)
            except FrameError as exc:
                self._refuse(len(line) + len(terminator), str(exc))
                continue
            self.stats.frames += 1
            frames.append(frame)
        if len(buffer) > self._max_line + len(terminator):
            if not self._overflowed:
                self._refuse(len(buffer), f"no line end within {self._max_line} characters")
            else:
                self.stats.noise_bytes += len(buffer)
            # Kept: the bytes that may begin the terminator, so one split over two chunks is still found.
            keep = len(terminator) - 1
            self.stats.noise_bytes -= keep
            del buffer[: len(buffer) - keep]
            self._overflowed = True
        return frames

    def _refuse(self, size: int, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.noise_bytes += size
        self.stats.last_error = reason

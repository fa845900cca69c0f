"""DBC files: read a file's frame layouts strictly and pack/unpack frames (our own reader, no library).

Why our own and not cantools: a profile needs only what a message and its signals look like (id, length,
bit position, byte order, sign, scale) and a bit packer. cantools brought about 60 modules (ARXML, KCD, SYM,
diagnostics, its tester) and 2.5 MB resident into every ``bmsgate run`` with a CAN output for that. The
tests check every shipped DBC against cantools: the same layouts, the same bytes for the same values.

Profiles compute *raw* signal values themselves (they need exact control of rounding, clamping and
SMA's "invalid" markers), so encoding here is bit layout only. What the reader understands: ``VERSION``,
``NS_``, ``BS_``, ``BU_``, ``BO_`` with its ``SG_`` lines, and every ``;``-terminated section (comments,
attributes, value tables, ...), which it skips. Multiplexed and floating point signals are refused by
name, as are signals outside their frame or overlapping another (what cantools' strict mode refuses).
Every problem is a :class:`~bmsgate.errors.DefinitionError` naming the line; encoding raises
``ValueError`` (a programming error of a profile).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from typing import Final

from bmsgate.errors import DefinitionError

__all__ = ["DbcDatabase", "DbcMessage", "DbcSignal", "load_dbc_text"]

_TOKEN: Final = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")'
    r"|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[:|@(),\[\];+-]))",
)
_SKIPPED_SECTIONS: Final = frozenset(
    {
        "CM_",
        "BA_DEF_",
        "BA_DEF_DEF_",
        "BA_",
        "VAL_",
        "VAL_TABLE_",
        "SIG_GROUP_",
        "BO_TX_BU_",
        "EV_",
        "ENVVAR_DATA_",
        "SGTYPE_",
        "SGTYPE_VAL_",
        "BA_DEF_SGTYPE_",
        "BA_SGTYPE_",
        "SIG_TYPE_REF_",
        "BA_DEF_REL_",
        "BA_REL_",
        "BA_DEF_DEF_REL_",
        "BU_SG_REL_",
        "BU_EV_REL_",
        "BU_BO_REL_",
        "CAT_DEF_",
        "CAT_",
        "FILTER",
    }
)
"""Sections that say nothing about a frame's bits: skipped up to their ``;``."""
_UNSUPPORTED: Final = {
    "SIG_VALTYPE_": "floating point signals (SIG_VALTYPE_) are not supported",
    "SG_MUL_VAL_": "extended multiplexing (SG_MUL_VAL_) is not supported",
}
_EXTENDED_FLAG: Final = 0x80000000
"""A ``BO_`` id with this bit set is a 29-bit (extended) identifier."""
_MAX_LENGTH: Final = 64
"""Bytes of the longest frame (CAN FD)."""
_MAX_INTEGER_DIGITS: Final = 10
"""Digits of the longest integer a DBC holds (a frame id with its extended flag)."""
_PSEUDO_MESSAGE: Final = "VECTOR__INDEPENDENT_SIG_MSG"
"""CANdb++'s holder of signals that belong to no frame: not a frame, skipped as cantools skips it."""


@dataclasses.dataclass(frozen=True, slots=True)
class DbcSignal:
    """What a profile needs to know about one signal.

    Attributes:
        name: the signal name (a source name, or mapped to one by the profile).
        length: bits.
        signed: two's complement.
        scale / offset: physical = raw × scale + offset.
        minimum / maximum: the DBC's physical range (None when the file leaves it open: ``[0|0]``).
        unit: as written in the DBC.
        start: the DBC start bit (the least significant bit little-endian, the most significant big-endian).
        big_endian: Motorola byte order (``@0``).
    """

    name: str
    length: int
    signed: bool
    scale: float
    offset: float
    minimum: float | None
    maximum: float | None
    unit: str
    start: int
    big_endian: bool

    @property
    def raw_min(self) -> int:
        """Smallest raw value the bit field holds."""
        return -(1 << (self.length - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        """Largest raw value the bit field holds."""
        return (1 << (self.length - 1)) - 1 if self.signed else (1 << self.length) - 1

    def shift(self, frame_length: int) -> int:
        """Where the field's least significant bit sits in the frame read as one integer.

        Little-endian signals in ``int.from_bytes(data, "little")``, big-endian ones in
        ``int.from_bytes(data, "big")``: in each, a signal is one contiguous run of bits.
        """
        if not self.big_endian:
            return self.start
        # The start bit counts bit 0 as byte 0's least significant bit; from the big-endian integer's most
        # significant end, that bit is at (byte × 8 + 7 − bit).
        from_top = (self.start // 8) * 8 + 7 - self.start % 8
        return frame_length * 8 - from_top - self.length

    def bits(self, frame_length: int) -> int:
        """The field's bits as DBC bit numbers (byte × 8 + bit), one mask for either byte order."""
        mask = (1 << self.length) - 1
        if not self.big_endian:
            return mask << self.start
        as_big = (mask << self.shift(frame_length)).to_bytes(frame_length, "big")
        return int.from_bytes(as_big, "little")


class DbcMessage:
    """One frame layout: id, length and signals; packs raw values into bytes."""

    def __init__(self, frame_id: int, name: str, length: int, is_extended: bool, signals: tuple[DbcSignal, ...]):
        self.frame_id = frame_id
        self.name = name
        self.length = length
        self.is_extended = is_extended
        self.signals = signals
        # Per signal, computed once (encoding runs on every send): name, shift, mask, raw range, byte order.
        self._fields = tuple(
            (
                signal.name,
                signal.shift(length),
                (1 << signal.length) - 1,
                signal.raw_min,
                signal.raw_max,
                signal.big_endian,
            )
            for signal in signals
        )
        self._last_packed: tuple[tuple[int, ...], bytes] | None = None
        """The latest raw values and their bytes: most frames of a set (names, flags, counts) repeat
        from one set to the next, and packing is most of a frame set's CPU."""

    def encode_raw(self, raw: Mapping[str, int]) -> bytes:
        """Pack raw (unscaled) values; `raw` must name every signal of the message.

        Raises:
            ValueError: a signal is missing or its value does not fit its bits.
        """
        try:
            ordered = tuple(int(raw[name]) for name, *_layout in self._fields)
        except KeyError as exc:
            raise ValueError(f"cannot encode {self.name}: no value for {exc.args[0]}") from None
        return self.pack(ordered)

    def pack(self, raw: tuple[int, ...]) -> bytes:
        """Pack raw (unscaled) values given in the order of :attr:`signals` (no names looked up).

        Raises:
            ValueError: the count is wrong or a value does not fit its bits.
        """
        last = self._last_packed
        if last is not None and last[0] == raw:
            return last[1]
        if len(raw) != len(self._fields):
            raise ValueError(f"cannot encode {self.name}: {len(raw)} values for {len(self._fields)} signals")
        little = big = 0
        for (name, shift, mask, low, high, big_endian), value in zip(self._fields, raw, strict=True):
            if not low <= value <= high:
                raise ValueError(f"cannot encode {self.name}: {name} = {value} does not fit {low}..{high}")
            if big_endian:
                big |= (value & mask) << shift
            else:
                little |= (value & mask) << shift
        if big:
            little |= int.from_bytes(big.to_bytes(self.length, "big"), "little")
        data = little.to_bytes(self.length, "little")
        self._last_packed = (raw, data)
        return data

    def decode_raw(self, data: bytes) -> dict[str, int]:
        """Raw values of every signal.

        Raises:
            ValueError: `data` is shorter than the message.
        """
        if len(data) < self.length:
            raise ValueError(f"cannot decode {self.name}: {len(data)} bytes, the message has {self.length}")
        frame = data[: self.length]
        little, big = int.from_bytes(frame, "little"), int.from_bytes(frame, "big")
        decoded = {}
        for name, shift, mask, low, _high, big_endian in self._fields:
            value = ((big if big_endian else little) >> shift) & mask
            if low < 0 and value > mask >> 1:
                value -= mask + 1
            decoded[name] = value
        return decoded

    def decode(self, data: bytes) -> dict[str, float]:
        """Physical values of every signal (used by the inverter simulator and tools)."""
        raw = self.decode_raw(data)
        return {signal.name: raw[signal.name] * signal.scale + signal.offset for signal in self.signals}


class DbcDatabase:
    """A strictly loaded DBC file: its messages by frame id."""

    def __init__(self, messages: tuple[DbcMessage, ...], source: str) -> None:
        self.source = source
        self.messages: dict[int, DbcMessage] = {m.frame_id: m for m in messages}

    def message(self, frame_id: int) -> DbcMessage:
        """The layout of `frame_id`.

        Raises:
            KeyError: the file does not define it.
        """
        return self.messages[frame_id]


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    line: int


def _tokens(text: str, source: str) -> list[_Token]:
    found: list[_Token] = []
    at, line = 0, 1
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.lastgroup is None:
            rest = text[at:].lstrip()
            if not rest:
                break
            line = text.count("\n", 0, len(text) - len(rest)) + 1
            raise DefinitionError(f"invalid DBC file: line {line}: unexpected {rest[:20]!r}", source=source)
        line += text.count("\n", at, match.start(match.lastgroup))
        found.append(_Token(match.lastgroup, match.group(match.lastgroup), line))
        line += match.group(match.lastgroup).count("\n")
        at = match.end()
    return found


class _Reader:
    """Walks the tokens of one file; every complaint names the line."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self._tokens, self._at, self._source = tokens, 0, source

    def error(self, reason: str, token: _Token | None = None) -> DefinitionError:
        token = token or self.peek()
        where = f"line {token.line}: " if token is not None else "at the end: "
        return DefinitionError(f"invalid DBC file: {where}{reason}", source=self._source)

    def peek(self) -> _Token | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def take(self, kind: str | None = None, text: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (kind is not None and token.kind != kind) or (text is not None and token.text != text):
            wanted = repr(text) if text is not None else (kind or "more")
            found = repr(token.text) if token is not None else "the end of the file"
            raise self.error(f"expected {wanted}, found {found}")
        self._at += 1
        return token

    def number(self) -> float:
        token = self.take("number")
        value = float(token.text)
        # A scale, offset or range that is infinite would only fail later, deep in a profile's encoders.
        if not math.isfinite(value):
            raise self.error(f"expected a finite number, found {token.text[:20]!r}", token)
        return value

    def integer(self) -> int:
        token = self.take("number")
        if not token.text.lstrip("+-").isdigit():
            raise self.error(f"expected an integer, found {token.text[:20]!r}", token)
        # Frame ids take 10 digits at most; a longer integer is no DBC value (and int() refuses > 4300 digits).
        if len(token.text.lstrip("+-")) > _MAX_INTEGER_DIGITS:
            raise self.error(f"integer {token.text[:20]!r}... is too long", token)
        return int(token.text)

    def rest_of_line(self, line: int) -> Iterator[_Token]:
        while (token := self.peek()) is not None and token.line == line:
            yield self.take()

    def skip_statement(self) -> None:
        keyword = self.take()
        while (token := self.peek()) is not None:
            self._at += 1
            if token.kind == "punct" and token.text == ";":
                return
        raise self.error(f"{keyword.text} without its closing ';'", keyword)


def _signal(reader: _Reader) -> DbcSignal:
    keyword = reader.take("word", "SG_")
    name = reader.take("word").text
    if (multiplexing := reader.peek()) is not None and multiplexing.kind == "word":
        raise reader.error(f"signal {name}: multiplexed signals are not supported")
    reader.take(text=":")
    start = reader.integer()
    reader.take(text="|")
    length = reader.integer()
    reader.take(text="@")
    order = reader.take("number")
    if order.text not in ("0", "1"):
        raise reader.error(f"signal {name}: byte order must be 0 or 1, not {order.text!r}", order)
    sign = reader.take("punct")
    if sign.text not in "+-":
        raise reader.error(f"signal {name}: expected + or - after the byte order", sign)
    reader.take(text="(")
    scale = reader.number()
    reader.take(text=",")
    offset = reader.number()
    reader.take(text=")")
    reader.take(text="[")
    low = reader.number()
    reader.take(text="|")
    high = reader.number()
    reader.take(text="]")
    unit = reader.take("string").text[1:-1]
    list(reader.rest_of_line(keyword.line))  # the receiving nodes
    if length < 1 or length > _MAX_LENGTH * 8:
        raise reader.error(f"signal {name}: length {length} bits", keyword)
    if start < 0:
        raise reader.error(f"signal {name}: start bit {start}", keyword)
    # [0|0] leaves the range open (cantools reads it so too).
    is_open = low == 0 and high == 0
    return DbcSignal(
        name=name,
        length=length,
        signed=sign.text == "-",
        scale=scale,
        offset=offset,
        minimum=None if is_open else low,
        maximum=None if is_open else high,
        unit=unit,
        start=start,
        big_endian=order.text == "0",
    )


def _message(reader: _Reader) -> DbcMessage | None:
    keyword = reader.take("word", "BO_")
    raw_id = reader.integer()
    name = reader.take("word").text
    reader.take(text=":")
    length = reader.integer()
    list(reader.rest_of_line(keyword.line))  # the sending node
    signals: list[DbcSignal] = []
    while (token := reader.peek()) is not None and token.text == "SG_":
        signals.append(_signal(reader))
    if name == _PSEUDO_MESSAGE:
        return None
    if not 0 <= length <= _MAX_LENGTH:
        raise reader.error(f"message {name}: length {length} bytes", keyword)
    taken = 0
    for signal in signals:
        if signal.big_endian:
            fits = 0 <= signal.start < length * 8 and signal.shift(length) >= 0
        else:
            fits = signal.start + signal.length <= length * 8
        if not fits:
            raise reader.error(f"message {name}: signal {signal.name} does not fit in {length} bytes", keyword)
        bits = signal.bits(length)
        if taken & bits:
            raise reader.error(f"message {name}: signal {signal.name} overlaps another signal", keyword)
        taken |= bits
    names = [signal.name for signal in signals]
    if len(set(names)) != len(names):
        raise reader.error(f"message {name}: a signal name appears twice", keyword)
    extended = bool(raw_id & _EXTENDED_FLAG)
    frame_id = raw_id & ~_EXTENDED_FLAG
    # Checked here, not when the first frame is sent: 29 bits for an extended id, 11 for a standard one.
    if not 0 <= raw_id <= 0xFFFFFFFF or frame_id > (0x1FFFFFFF if extended else 0x7FF):
        raise reader.error(f"message {name}: frame id {raw_id} is not a CAN id", keyword)
    return DbcMessage(frame_id, name, length, extended, tuple(signals))


def _skip_header(reader: _Reader, token: _Token) -> None:
    if token.text == "VERSION":
        reader.take()
        reader.take("string")
    elif token.text == "NS_":
        # The new-symbols list names section keywords; it ends where the (mandatory) bit timing begins.
        reader.take()
        while (following := reader.peek()) is not None and following.text not in ("BS_", "BU_", "BO_"):
            reader.take()
    else:  # BS_ and BU_: the bit timing and the node names, each on its line
        reader.take()
        list(reader.rest_of_line(token.line))


def load_dbc_text(text: str, *, source: str) -> DbcDatabase:
    """Parse DBC text strictly (overlapping or out-of-frame signals are errors).

    Args:
        text: the file's content.
        source: the file name, for error messages.

    Raises:
        DefinitionError: the text is not a valid DBC file, or uses what this reader does not support.
    """
    reader = _Reader(_tokens(text, source), source)
    messages: list[DbcMessage] = []
    while (token := reader.peek()) is not None:
        if token.text == "BO_":
            if (message := _message(reader)) is not None:
                messages.append(message)
        elif token.text in ("VERSION", "NS_", "BS_", "BU_"):
            _skip_header(reader, token)
        elif token.text in _SKIPPED_SECTIONS:
            reader.skip_statement()
        elif token.text in _UNSUPPORTED:
            raise reader.error(_UNSUPPORTED[token.text])
        else:
            raise reader.error(f"unexpected {token.text!r}")
    seen: set[tuple[int, bool]] = set()
    for message in messages:
        key = (message.frame_id, message.is_extended)
        if key in seen:
            raise DefinitionError(f"invalid DBC file: frame id {message.frame_id:#x} twice", source=source)
        seen.add(key)
    return DbcDatabase(tuple(messages), source)

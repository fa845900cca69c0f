"""The cantools adapter: load a DBC file strictly and pack/unpack frames (the only cantools import).

Profiles compute *raw* signal values themselves (they need exact control of rounding, clamping and
SMA's "invalid" markers), so encoding here is cantools' bit layout only: ``scaling=False``. Every
cantools failure becomes a :class:`~bmsgate.errors.DefinitionError` (loading) naming the file, or a
``ValueError`` (a programming error while encoding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import cantools

from bmsgate.errors import DefinitionError

__all__ = ["DbcDatabase", "DbcMessage", "DbcSignal", "load_dbc_text"]


@dataclasses.dataclass(frozen=True, slots=True)
class DbcSignal:
    """What a profile needs to know about one signal.

    Attributes:
        name: the signal name (a source name, or mapped to one by the profile).
        length: bits.
        signed: two's complement.
        scale / offset: physical = raw × scale + offset.
        minimum / maximum: the DBC's physical range (None when the file leaves it open).
        unit: as written in the DBC.
    """

    name: str
    length: int
    signed: bool
    scale: float
    offset: float
    minimum: float | None
    maximum: float | None
    unit: str

    @property
    def raw_min(self) -> int:
        """Smallest raw value the bit field holds."""
        return -(1 << (self.length - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        """Largest raw value the bit field holds."""
        return (1 << (self.length - 1)) - 1 if self.signed else (1 << self.length) - 1


class DbcMessage:
    """One frame layout: id, length and signals; packs raw values into bytes."""

    def __init__(self, message: Any) -> None:
        self._message = message
        self.frame_id: int = message.frame_id
        self.name: str = message.name
        self.length: int = message.length
        self.is_extended: bool = bool(message.is_extended_frame)
        self.signals: tuple[DbcSignal, ...] = tuple(
            DbcSignal(
                name=signal.name,
                length=signal.length,
                signed=bool(signal.is_signed),
                scale=float(signal.scale),
                offset=float(signal.offset),
                minimum=None if signal.minimum is None else float(signal.minimum),
                maximum=None if signal.maximum is None else float(signal.maximum),
                unit=signal.unit or "",
            )
            for signal in message.signals
        )
        self._last_encoded: tuple[tuple[tuple[str, int], ...], bytes] | None = None
        """The latest raw values and their bytes: most frames of a set (names, flags, counts) repeat
        from one set to the next, and cantools' encode is most of a frame set's CPU."""

    def encode_raw(self, raw: Mapping[str, int]) -> bytes:
        """Pack raw (unscaled) values; `raw` must name every signal of the message."""
        key = tuple(raw.items())
        last = self._last_encoded
        if last is not None and last[0] == key:
            return last[1]
        try:
            data = bytes(self._message.encode(dict(raw), scaling=False, strict=False))
        except (cantools.database.EncodeError, KeyError) as exc:
            raise ValueError(f"cannot encode {self.name}: {exc}") from exc
        self._last_encoded = (key, data)
        return data

    def decode(self, data: bytes) -> dict[str, float]:
        """Physical values of every signal (used by the inverter simulator and tools)."""
        decoded = self._message.decode(data, decode_choices=False, scaling=True)
        return {name: float(value) for name, value in decoded.items()}

    def decode_raw(self, data: bytes) -> dict[str, int]:
        """Raw values of every signal."""
        decoded = self._message.decode(data, decode_choices=False, scaling=False)
        return {name: int(value) for name, value in decoded.items()}


class DbcDatabase:
    """A strictly loaded DBC file: its messages by frame id."""

    def __init__(self, database: Any, source: str) -> None:
        self.source = source
        self.messages: dict[int, DbcMessage] = {m.frame_id: DbcMessage(m) for m in database.messages}

    def message(self, frame_id: int) -> DbcMessage:
        """The layout of `frame_id`.

        Raises:
            KeyError: the file does not define it.
        """
        return self.messages[frame_id]


def load_dbc_text(text: str, *, source: str) -> DbcDatabase:
    """Parse DBC text in cantools' strict mode (overlapping or out-of-frame signals are errors).

    Args:
        text: the file's content.
        source: the file name, for error messages.

    Raises:
        DefinitionError: the text is not a valid DBC file.
    """
    try:
        database = cantools.database.load_string(text, database_format="dbc", strict=True)
    except Exception as exc:  # cantools raises many types (ParseError, Error, ValueError, ...)
        raise DefinitionError(f"invalid DBC file: {exc}", source=source) from exc
    return DbcDatabase(database, source)

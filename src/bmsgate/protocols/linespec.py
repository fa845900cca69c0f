"""The ``framing.lines`` section: delimited text lines read by column into frames (engine 5).

Lithionics packs stream ``\\r\\n``-terminated CSV lines without being asked: a numeric primary line
(``1399,350,350,350,349,55,48,-3,99,000000``) and a status line (``&,1,319,006391,…``). The engine decodes
bytes at offsets, so each line is turned into a frame at the edge (:mod:`bmsgate.protocols.lineframing`):
its kind (the first kind whose conditions it meets) gives the frame's key, and every declared column, in
the order declared, one 4-byte big-endian slot:

- a decimal column (``base: 10``, the default) is a signed ``s32``: the number × 10^``decimals``, exactly
  (``-3.25`` with ``decimals: 2`` is −325), so a field's ``scale`` undoes it;
- a hex column (``base: 16``) is an unsigned ``u32``; with ``signed: true`` (engine 7) a ``+`` or ``-``
  may lead it and it is an ``s32`` (123\\SmartBMS gen3: ``+0014`` is 20, ``-0014`` −20);
- an empty column, or one past the line's end, is :data:`ABSENT` (``80 00 00 00``: −2147483648 read as
  ``s32``, 2147483648 as ``u32``), for a field's ``absent``; so is, with ``no_value`` (engine 7), a column
  that is only that character, repeated, after an optional sign (``X``, ``XXXX``: the BMS has no reading).

Engine 7 also reads lines that carry no number: a kind without ``columns`` (an ``OK`` acknowledgement: its
frame holds only the key), and a ``refusal`` kind (``NA``), whose line refuses the request just sent, as
a hex-text ``refusal`` does (a frame without key whose status is not ok).

Re-exported by `definition` through `framingspec`.
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from bmsgate.protocols.datatypes import STRICT

__all__ = ["ABSENT", "SLOT_SIZE", "LineColumn", "LineKind", "LinesSpec"]

SLOT_SIZE: Final = 4
"""Bytes of one column's slot."""
ABSENT: Final = -(2**31)
"""The slot of an empty or missing column, as ``s32``."""


class _Strict(BaseModel):
    model_config = STRICT


class LineColumn(_Strict):
    """One column of a line kind, by its position (0 = the first)."""

    index: int = Field(ge=0, le=255)
    base: Literal[10, 16] = 10
    decimals: int = Field(default=0, ge=0, le=6)
    """Decimal columns only: fractional digits kept (more in the text refuse the line)."""
    signed: bool = False
    """Engine 7, hex columns only: a leading ``+`` or ``-`` gives the sign; the slot is an ``s32``."""

    @model_validator(mode="after")
    def _decimals_need_base_10(self) -> Self:
        if self.base == 16 and self.decimals:
            raise ValueError("'decimals' is for decimal columns (base: 10)")
        if self.signed and self.base != 16:
            raise ValueError("'signed' is for hex columns (base: 16); a decimal column is always signed")
        return self


class LineKind(_Strict):
    """A kind of line: which lines are of it, its frame key, and the columns read."""

    key: int = Field(ge=0, le=255)
    """The frame's key (its byte after the start marker): the ``replies`` entry that reads it."""
    first: str | None = Field(default=None, min_length=1, max_length=16)
    """The text the first column must be (``&`` for Lithionics' status line); None: any."""
    min_columns: int = Field(default=1, ge=1, le=255)
    """Lines with fewer columns are not of this kind."""
    columns: list[LineColumn] = Field(default=[], max_length=64)
    """The columns read; none (engine 7): a line that only says something (``OK``), by its ``first`` text."""
    refusal: bool = False
    """Engine 7: a line of this kind refuses the request just sent (``NA``); it reads no column."""

    @model_validator(mode="after")
    def _columns_distinct(self) -> Self:
        if not self.columns and self.first is None:
            raise ValueError("a kind that reads no column is told by its 'first' text (e.g. first: OK)")
        if self.refusal and self.columns:
            raise ValueError("a 'refusal' kind reads no column: the line only refuses the request")
        indexes = [column.index for column in self.columns]
        if len(set(indexes)) != len(indexes):
            raise ValueError("a column is read at most once per line kind")
        if self.first is not None and 0 in indexes:
            raise ValueError("column 0 is the kind's 'first' text; it cannot also be read as a number")
        return self

    @property
    def width(self) -> int:
        """Columns a line of this kind is written with (the simulator's lines)."""
        return max(self.min_columns, 1, *(column.index + 1 for column in self.columns))


class LinesSpec(_Strict):
    """How lines are split and which kinds are read; lines of no kind are skipped as noise."""

    separator: str = Field(default=",", min_length=1, max_length=1)
    kinds: list[LineKind] = Field(min_length=1, max_length=16)
    no_value: str | None = Field(default=None, min_length=1, max_length=1)
    """Engine 7: the character a column is made of when the BMS has no value (``X``): read as absent."""

    @field_validator("no_value")
    @classmethod
    def _no_number_character(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.isascii() or value in "0123456789abcdefABCDEF+-. " or not value.isprintable()
        ):
            raise ValueError("'no_value' is one printable ASCII character that is no digit, sign or point")
        return value

    @field_validator("separator")
    @classmethod
    def _printable_separator(cls, value: str) -> str:
        if not value.isascii() or value.isalnum() or value in "-+.":
            raise ValueError("the separator is one ASCII character that is not part of a number")
        return value

    @model_validator(mode="after")
    def _keys_distinct(self) -> Self:
        keys = [kind.key for kind in self.kinds]
        if len(set(keys)) != len(keys):
            raise ValueError("every line kind needs its own key")
        if self.no_value is not None and self.no_value == self.separator:
            raise ValueError("'no_value' cannot be the separator")
        return self

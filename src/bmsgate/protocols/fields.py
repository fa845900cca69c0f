"""The field tables of a protocol definition: where each value sits in a reply and where it goes.

`FieldSpec` is one row (offset, type, scale, flags, ...) and its validation; `ReplySpec` is the table of
one reply type. The snapshot targets a field may write are derived from the model (`bmsgate.model`).
"""

from __future__ import annotations

import math
import re
from typing import Final, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from bmsgate.canonical import Real
from bmsgate.model import BOOL_FIELDS, DEVICE_FIELDS, FLOAT_FIELDS, INT_FIELDS, LIST_FIELDS, SET_FIELDS, Alarm
from bmsgate.protocols.datatypes import STRICT, Endian

__all__ = [
    "BOOL_TARGETS",
    "DEVICE_TARGETS",
    "FLOAT_TARGETS",
    "INTEGER_SIZES",
    "INT_TARGETS",
    "LIST_TARGETS",
    "FieldCondition",
    "FieldSpec",
    "FieldType",
    "FrameIndexSpec",
    "IntegerType",
    "PackedDate",
    "ReplySpec",
    "SignMagnitude",
    "is_var",
]

FLOAT_TARGETS: Final = FLOAT_FIELDS
INT_TARGETS: Final = INT_FIELDS
BOOL_TARGETS: Final = BOOL_FIELDS
LIST_TARGETS: Final = LIST_FIELDS
DEVICE_TARGETS: Final = frozenset(f"device.{name}" for name in DEVICE_FIELDS)
_SPECIAL_TARGETS: Final = SET_FIELDS
_IDENTIFIER: Final = re.compile(r"^[a-z][a-z0-9_]*$")

IntegerType = Literal["u8", "s8", "u16", "s16", "u24", "s24", "u32", "s32", "u64", "s64"]
FieldType = Literal["u8", "s8", "u16", "s16", "u24", "s24", "u32", "s32", "u64", "s64", "f32", "str"]
INTEGER_SIZES: Final[dict[str, int]] = {
    "u8": 1,
    "s8": 1,
    "u16": 2,
    "s16": 2,
    "u24": 3,
    "s24": 3,
    "u32": 4,
    "s32": 4,
    "u64": 8,
    "s64": 8,
    "f32": 4,
}


# -- rows --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = STRICT


class PackedDate(_Strict):
    """A date packed into bit ranges of an integer: each part is ``[high_bit, low_bit]`` (+ add)."""

    year: tuple[int, int]
    month: tuple[int, int]
    day: tuple[int, int]
    year_add: int = 2000


class SignMagnitude(_Strict):
    """A signed number stored as a sign bit and a magnitude (TDT's current: bit 15 = negative)."""

    sign_bit: int = Field(ge=1, le=63)
    magnitude_bits: int = Field(ge=1, le=63)
    """The magnitude is the low `magnitude_bits` bits; bits between it and the sign bit are ignored."""
    negative: Literal["magnitude", "complement"] = "magnitude"
    """With the sign bit set, the value is ``-magnitude`` (``magnitude``) or ``-(magnitude + 1)``, the
    magnitude's bitwise complement (``complement``, engine 6: Dometic's current, aiobmsble's ``32767 - x``)."""

    @model_validator(mode="after")
    def _magnitude_below_sign(self) -> Self:
        if self.magnitude_bits > self.sign_bit:
            raise ValueError("the magnitude must lie below the sign bit")
        return self


class SignChar(_Strict):
    """A signed number whose first byte is an ASCII sign character and the rest its magnitude (engine 6).

    123\\SmartBMS sends its current as ``+``/``-`` and a 16-bit magnitude, ``X`` when it has none: a first
    byte in neither list is no value.
    """

    positive: list[int] = Field(default=[0x2B], min_length=1)
    negative: list[int] = Field(default=[0x2D], min_length=1)

    @model_validator(mode="after")
    def _distinct_bytes(self) -> Self:
        signs = [*self.positive, *self.negative]
        if any(not 0 <= sign <= 0xFF for sign in signs) or len(set(signs)) != len(signs):
            raise ValueError("sign characters are distinct bytes (0..255), each in one list")
        return self


class FieldCondition(_Strict):
    """Decode a field only while a variable lies in ``[min, max]`` (unknown variable: skip the field)."""

    var: str
    min: int | None = None
    max: int | None = None

    @field_validator("var")
    @classmethod
    def _var_form(cls, value: str) -> str:
        if not is_var(value):
            raise ValueError("expected 'var.NAME'")
        return value

    def holds(self, value: int | None) -> bool:
        """Whether `value` (None = unknown) satisfies the condition."""
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class FieldSpec(_Strict):
    """One value in a reply payload and where it goes in the snapshot."""

    target: str
    at: int = Field(ge=0)
    type: FieldType = "u16"
    endian: Endian | None = None
    scale: Real = 1.0
    add: Real = 0.0
    count: int | str | None = None
    """List length: a number, ``rest`` (as many as fit) or ``var.NAME``."""
    limit: str | None = None
    """``var.NAME``: keep at most that many list items (fixed tables larger than the pack)."""
    stride: int | None = Field(default=None, ge=1)
    absent: list[int] = []
    """Raw values meaning "not present" (dropped from lists, None for scalars)."""
    bit: int | None = Field(default=None, ge=0, le=63)
    invert: bool = False
    flags: dict[int, Alarm] | None = None
    codes: dict[int, Alarm] | None = None
    """For target `alarms`: an enumerated status value that raises one alarm (``{raw: alarm}``)."""
    one_of: list[int] | None = Field(default=None, min_length=1)
    """For boolean targets: true when the raw value is one of these (a status code such as 1 = "on")."""
    shift: dict[str, int] | None = None
    """``{var.NAME: bytes per unit}``: the field sits `at` + the sum of variable × bytes (after lists whose
    length a decoded count sets)."""
    cells: int | None = Field(default=None, ge=1)
    """Bitmask of cells; the number of the cell in bit 0 (e.g. 1, or 17 for the second word)."""
    popcount: bool = False
    map: dict[int, str | int | float | bool] | None = None
    date: PackedDate | None = None
    date_format: str | None = None
    """For strings: a strptime format such as ``%y%m%d``."""
    version: Literal["nibbles", "byte_tenths", "major_minor"] | None = None
    size: int | Literal["rest"] | None = None
    """String length in bytes."""
    variants: list[str] | None = None
    """Only in these layouts (see `ProtocolDefinition.variants`); None = in every layout."""
    when: FieldCondition | None = None
    """Only while a decoded variable lies in a range (e.g. a firmware version)."""
    sign_magnitude: SignMagnitude | None = None
    """The raw integer is a sign bit and a magnitude; value = ±magnitude × scale + add."""
    sign_char: SignChar | None = None
    """Engine 6: the raw integer's first byte is a sign character, the rest the magnitude."""
    difference: bool = False
    """The raw integer is two halves; value = (high half − low half) × scale + add (E&J: charge − discharge)."""
    multiplier: bool = False
    """Engine 6 (``u24``): the low two bytes are a signed 16-bit number and the high byte multiplies it (0
    counts as 1); value = s16 × multiplier × scale + add (Offgridtec's 24-bit registers)."""

    @field_validator("count")
    @classmethod
    def _count_form(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("count must be at least 1")
        if isinstance(value, str) and value != "rest" and not is_var(value):
            raise ValueError("count must be a number, 'rest' or 'var.NAME'")
        return value

    @field_validator("limit")
    @classmethod
    def _limit_form(cls, value: str | None) -> str | None:
        if value is not None and not is_var(value):
            raise ValueError("limit must be 'var.NAME'")
        return value

    @field_validator("shift")
    @classmethod
    def _shift_form(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            if not value:
                raise ValueError("shift needs at least one 'var.NAME: bytes' entry")
            for name in value:
                if not is_var(name):
                    raise ValueError(f"shift keys must be 'var.NAME', not {name!r}")
        return value

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if (
            value in FLOAT_TARGETS
            or value in INT_TARGETS
            or value in BOOL_TARGETS
            or value in LIST_TARGETS
            or value in DEVICE_TARGETS
            or value in _SPECIAL_TARGETS
        ):
            return value
        prefix, _, name = value.partition(".")
        if prefix in {"extras", "var"} and _IDENTIFIER.match(name):
            return value
        raise ValueError(f"unknown target {value!r}; use a snapshot field, device.FIELD, extras.NAME or var.NAME")

    @model_validator(mode="after")
    def _finite(self) -> Self:
        # Every raw value of the type must scale to a finite number: else an integer target (int(inf))
        # or a NaN would fail while decoding a frame, where no definition fault should surface.
        if not (math.isfinite(self.scale) and math.isfinite(self.add)):
            raise ValueError("scale and add must be finite numbers")
        if self.scale and not math.isfinite(2 * (1 + abs(self.add)) / abs(self.scale)):
            # Compiling looks for an exact divisor (1 / scale, add / scale): it must be a finite number.
            raise ValueError(f"scale {self.scale:g} is too small to be a resolution (for add {self.add:g})")
        if self.type not in {"str", "f32"}:
            widest = 2.0 ** (8 * INTEGER_SIZES[self.type])
            if not math.isfinite(abs(self.scale) * widest + abs(self.add)):
                raise ValueError(f"scale {self.scale:g} would take a {self.type} value beyond any finite number")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        target, kind = self.target, self.type
        # A list into extras.NAME becomes numbered keys NAME_1, NAME_2, ...
        is_list = target in LIST_TARGETS or (target.startswith("extras.") and self.count is not None)
        if kind == "str":
            if self.size is None:
                raise ValueError("a 'str' field needs a size")
            if any(v is not None for v in (self.bit, self.flags, self.cells, self.date)):
                raise ValueError("bit/flags/cells/date do not apply to strings")
            if not (target in DEVICE_TARGETS or target.startswith(("extras.", "var."))):
                raise ValueError("strings can only go to device.*, extras.* or var.* (its leading number)")
        elif self.size is not None:
            raise ValueError("'size' is only for strings")
        if kind == "f32" and any(v is not None for v in (self.bit, self.flags, self.cells, self.date)):
            raise ValueError("bit/flags/cells/date need an integer type")
        if is_list != (self.count is not None):
            raise ValueError(
                "list targets (cell_voltages, temperatures, extras.NAME) need 'count'; others must not have it"
            )
        if self.limit is not None and not is_list:
            raise ValueError("'limit' is only for lists")
        if (target == "alarms") != ((self.flags is not None) or (self.codes is not None)):
            raise ValueError("target 'alarms' goes with 'flags' (bit → alarm name) or 'codes', and only it")
        if self.flags is not None and self.codes is not None:
            raise ValueError("give either 'flags' (bits) or 'codes' (enumerated values), not both")
        if self.map is not None:
            _check_map_values(target, self.map)
        if self.one_of is not None and (
            target not in BOOL_TARGETS or self.bit is not None or self.map is not None or kind in {"str", "f32"}
        ):
            raise ValueError("'one_of' is for boolean targets read from an integer, without 'bit' or 'map'")
        if (target == "balancing_cells") != (self.cells is not None):
            raise ValueError("target 'balancing_cells' goes with 'cells' (number of the first cell)")
        if target == "device.production_date" and self.date is None and self.date_format is None:
            raise ValueError("a production date needs 'date' (packed bits) or 'date_format'")
        if self.date_format is not None and kind != "str":
            raise ValueError("'date_format' is for strings; use 'date' for packed integers")
        if self.bit is not None and self.bit >= 8 * INTEGER_SIZES.get(kind, 8):
            raise ValueError(f"bit {self.bit} does not fit in {kind}")
        if self.version is not None and not (target in DEVICE_TARGETS or target.startswith("extras.")):
            raise ValueError("'version' formats go to device.* or extras.*")
        if self.sign_magnitude is not None:
            others = (self.bit, self.flags, self.codes, self.cells, self.date, self.map, self.version, self.one_of)
            if kind not in {"u8", "u16", "u24", "u32", "u64"} or any(v is not None for v in others) or self.popcount:
                raise ValueError("'sign_magnitude' is for unsigned integer numbers without bit/flags/map/...")
            if self.sign_magnitude.sign_bit >= 8 * INTEGER_SIZES[kind] or is_list:
                raise ValueError(f"'sign_magnitude' needs a scalar whose sign bit fits in {kind}")
        if self.sign_char is not None:
            others = (self.bit, self.flags, self.codes, self.cells, self.date, self.map, self.version, self.one_of)
            if (
                kind not in {"u16", "u24", "u32", "u64"}
                or any(v is not None for v in others)
                or self.popcount
                or self.sign_magnitude is not None
                or self.difference
                or is_list
            ):
                raise ValueError("'sign_char' is for a scalar u16/u24/u32/u64 number without bit/flags/map/...")
        if self.difference:
            others = (self.bit, self.flags, self.codes, self.cells, self.date, self.map, self.version, self.one_of)
            if (
                kind not in {"u16", "u32", "u64"}
                or any(v is not None for v in others)
                or self.popcount
                or self.sign_magnitude is not None
                or is_list
            ):
                raise ValueError("'difference' is for a scalar u16/u32/u64 number without bit/flags/map/...")
        if self.multiplier:
            others = (self.bit, self.flags, self.codes, self.cells, self.date, self.map, self.version, self.one_of)
            if (
                kind != "u24"
                or any(v is not None for v in others)
                or self.popcount
                or self.sign_magnitude is not None
                or self.difference
                or is_list
            ):
                raise ValueError("'multiplier' is for a scalar u24 number without bit/flags/map/difference/...")
        return self

    @property
    def item_size(self) -> int:
        """Bytes of one value (strings: their size, 0 for 'rest')."""
        if self.type == "str":
            return self.size if isinstance(self.size, int) else 0
        return INTEGER_SIZES[self.type]

    def variables_used(self) -> list[str]:
        """Names of ``var.*`` this field reads."""
        used = [value[4:] for value in (self.count, self.limit) if isinstance(value, str) and is_var(value)]
        if self.when is not None:
            used.append(self.when.var[4:])
        if self.shift is not None:
            used += [name[4:] for name in self.shift]
        return used


def _check_map_values(target: str, mapping: dict[int, str | int | float | bool]) -> None:
    """A map's values must be what its target holds (a text in a number would fail at decode time)."""
    if target.startswith("extras."):
        return  # extras hold any scalar
    values = list(mapping.values())
    if target.startswith("var.") or target in INT_TARGETS:
        wanted, fits = "whole numbers", all(type(value) is int for value in values)
    elif target in FLOAT_TARGETS:
        wanted, fits = "numbers", all(type(value) in {int, float} for value in values)
    elif target in BOOL_TARGETS:
        wanted, fits = "true/false", all(type(value) is bool for value in values)
    elif target in DEVICE_TARGETS and target != "device.production_date":
        wanted, fits = "texts", all(type(value) is str for value in values)
    else:
        raise ValueError(f"'map' does not apply to {target}")
    if not fits:
        raise ValueError(f"'map' values for {target} must be {wanted}")


def is_var(value: str) -> bool:
    """Whether `value` names a decoded variable (``var.NAME``)."""
    return value.startswith("var.") and bool(_IDENTIFIER.match(value[4:]))


class FrameIndexSpec(_Strict):
    """Several frames of one reply type each carry a slice of its lists, numbered by a byte.

    The frame whose number byte (payload offset `at`) reads ``n`` holds list items from position
    ``(n - base) × count`` on (Daly A5 cell voltages: three per frame).
    """

    at: int = Field(ge=0)
    base: int = Field(default=1, ge=0, le=255)
    numbers: Literal["frames", "items"] = "frames"
    """``items`` (engine 5): the byte is the number of the frame's first item, so the frame reading ``n``
    holds items from position ``n - base`` on (ABC numbers its cell frames 1, 5, 9, ... by their first cell)."""


class ReplySpec(_Strict):
    """The field table of one reply type."""

    name: str
    min_payload: int = Field(default=0, ge=0)
    fields: list[FieldSpec] = []
    index: FrameIndexSpec | None = None
    """Set when one request is answered by several numbered frames of this type."""

    @model_validator(mode="after")
    def _indexed_lists(self) -> Self:
        if self.index is not None:
            for index, field in enumerate(self.fields):
                if field.count is not None and not isinstance(field.count, int):
                    raise ValueError(f"fields[{index}]: lists in an indexed reply need a fixed numeric count")
                if field.shift is not None:
                    raise ValueError(f"fields[{index}]: 'shift' is not supported in an indexed reply")
        return self

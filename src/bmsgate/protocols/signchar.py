"""Numbers stored as an ASCII sign character and a magnitude (field key ``sign_char``; engine 6).

123\\SmartBMS sends its current as three bytes: ``+`` or ``-`` and a 16-bit magnitude, ``X`` when it has no
reading. The field's raw unsigned integer holds the character in its most significant byte; the value is
±magnitude × scale + add, and a first byte in neither list of the field's `SignChar` is no value (None).
Encoding writes the first character of the matching list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bmsgate.protocols.definition import INTEGER_SIZES, FieldSpec

__all__ = ["sign_char_raw", "sign_char_value"]


def _split(field: FieldSpec) -> tuple[int, int]:
    """The shift to the sign byte and the mask of the magnitude below it."""
    shift = 8 * (INTEGER_SIZES[field.type] - 1)
    return shift, (1 << shift) - 1


def sign_char_value(field: FieldSpec, divisor: tuple[int, int] | None) -> Callable[[int], float | None]:
    """The decode transform: raw integer → signed value, or None for an unknown sign character.

    `divisor` is the field's exact (steps, offset) division when its scale allows one (see
    `bmsgate.protocols.transforms.exact_divisor`): the value is then rounded to the field's resolution.
    """
    spec = field.sign_char
    if spec is None:
        raise ValueError(f"field {field.target} has no 'sign_char'")
    shift, mask = _split(field)
    signs = dict.fromkeys(spec.positive, 1) | dict.fromkeys(spec.negative, -1)
    scale, add = field.scale, field.add

    def signed(raw: int) -> float | None:
        sign = signs.get(raw >> shift)
        if sign is None:
            return None  # 'X' or any other byte: the BMS has no value
        if divisor is not None:
            steps, offset = divisor
            return (sign * (raw & mask) + offset) / steps + 0.0
        return float(sign * (raw & mask) * scale + add)

    return signed


def sign_char_raw(field: FieldSpec) -> Callable[[Any, Any], int]:
    """The encode transform: value → raw integer with the sign character in front (the magnitude capped)."""
    spec = field.sign_char
    if spec is None:
        raise ValueError(f"field {field.target} has no 'sign_char'")
    shift, mask = _split(field)
    plus, minus = spec.positive[0] << shift, spec.negative[0] << shift
    scale, add = field.scale, field.add

    def to_sign_char(value: Any, _current: Any) -> int:
        signed = round((float(value) - add) / scale)
        return min(abs(signed), mask) | (minus if signed < 0 else plus)

    return to_sign_char

"""A signed 16-bit number and its multiplier byte in one 24-bit raw value (field ``multiplier``; engine 6).

Offgridtec's 24-bit registers hold a signed number in their low two bytes (little-endian) and a multiplier
in the third, which reads 0 where 1 is meant (type A's current). :func:`multiplied_value` decodes such a
raw value, :func:`multiplied_raw` is its inverse for the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["multiplied_raw", "multiplied_value"]


def multiplied_value(scale: float, add: float, divisor: tuple[int, int] | None) -> Callable[[Any], Any]:
    """Raw u24 → number × multiplier × `scale` + `add`.

    With `divisor` (steps per unit, offset in steps: `transforms.exact_divisor`) one correctly rounded division.
    """

    def multiplied(raw: Any) -> Any:
        low = raw & 0xFFFF
        number = (low - 0x10000 if low & 0x8000 else low) * max(raw >> 16, 1)
        if divisor is not None:
            return (number + divisor[1]) / divisor[0] + 0.0
        return number * scale + add

    return multiplied


def multiplied_raw(steps: float) -> int:
    """The raw u24 whose number × multiplier is nearest `steps` (multiplier 1 while it fits 16 bits)."""
    whole = round(steps)
    factor = min(max(1, -(-abs(whole) // 0x7FFF)), 0xFF)
    number = max(-0x8000, min(0x7FFF, round(whole / factor)))
    return (factor if factor > 1 else 0) << 16 | (number & 0xFFFF)

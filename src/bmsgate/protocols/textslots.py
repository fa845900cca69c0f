"""Text framings' empty values: a JSON ``null`` or an empty column must never read as a measurement.

The JSON and line framings (`bmsgate.protocols.jsonspec`, `bmsgate.protocols.linespec`) turn each value
into a 32-bit slot, and a missing value into the lowest ``s32`` (2**31 when the field reads the slot as
``u32``). A value field that does not list that marker in ``absent`` would present it as a reading
(-21474836.48 V), so a definition with such a field is refused when it loads. Alarm words need no marker:
it has no bit below 31 set, so it raises nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bmsgate.protocols.fields import ReplySpec

__all__ = ["ABSENT_MARKERS", "check_absent_markers"]

ABSENT_MARKERS: Final = {"s32": -(2**31), "u32": 2**31}
"""The raw value a slot without a value reads as, per field type."""


def check_absent_markers(text: str | None, replies: Mapping[int, ReplySpec]) -> None:
    """Refuse a value field of a JSON or line framing that would read a missing value as a number.

    Raises:
        ValueError: naming the reply, the field and the ``absent`` entry it needs.
    """
    if text not in {"json", "lines"}:
        return
    for key, reply in replies.items():
        for index, field in enumerate(reply.fields):
            marker = ABSENT_MARKERS.get(field.type)
            if marker is None or field.target == "alarms" or marker in field.absent:
                continue
            raise ValueError(
                f"replies[{key:#04x}].fields[{index}] ({field.target}): a {text} slot without a value reads "
                f"as {marker}; list it in 'absent' (absent: [{marker}])"
            )

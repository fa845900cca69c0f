"""The value types protocol definitions are written in: hex bytes, UUIDs, byte order, strict models.

Shared by the definition's parts (discovery, framing, fields); each parses what users write in several
spellings and serialises to the one canonical spelling.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

__all__ = ["STRICT", "Endian", "HexBytes", "Uuid", "normalize_uuid", "parse_hex"]

_BLUETOOTH_BASE_UUID: Final = "-0000-1000-8000-00805f9b34fb"


def parse_hex(value: Any) -> bytes:
    """Accept ``"DD A5 03"``, ``"dda503"`` or ``"DD:A5:03"`` (and bytes) and return the bytes."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError("expected a hex string such as 'DD A5 03 00'")
    cleaned = re.sub(r"[\s:_-]", "", value)
    bad = next((char for char in cleaned if char not in string.hexdigits), None)
    if bad is not None:
        raise ValueError(f"{value!r} is not hex: {bad!r} is not a hex digit")
    if len(cleaned) % 2:
        raise ValueError(f"{value!r} is not an even number of hex digits")
    return bytes.fromhex(cleaned)


def normalize_uuid(value: Any) -> str:
    """Full lowercase 128-bit form of a UUID given as 16-bit (``ff01``), 32-bit or 128-bit text."""
    if isinstance(value, int):
        value = f"{value:04x}"
    if not isinstance(value, str):
        raise ValueError("expected a UUID such as 'ff01' or '0000ff01-0000-1000-8000-00805f9b34fb'")
    text = value.strip().lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{4}", text):
        return f"0000{text}{_BLUETOOTH_BASE_UUID}"
    if re.fullmatch(r"[0-9a-f]{8}", text):
        return f"{text}{_BLUETOOTH_BASE_UUID}"
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        return text
    raise ValueError(f"{value!r} is not a 16-bit, 32-bit or 128-bit UUID")


HexBytes = Annotated[
    bytes,
    BeforeValidator(parse_hex),
    # The IR writes bytes one way only (lowercase, no separators); any spelling parse_hex accepts reads back.
    PlainSerializer(bytes.hex, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "description": "hex bytes, e.g. 'DD A5 03 00' or 'dda50300'"}),
]
Uuid = Annotated[str, BeforeValidator(normalize_uuid)]
Endian = Literal["big", "little"]


STRICT: Final = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)
"""Every definition model is frozen, refuses unknown keys (a typo in a file is an error, not ignored) and
refuses inf/NaN (a scale of NaN would make every decoded value NaN)."""

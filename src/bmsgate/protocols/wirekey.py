"""A per-device XOR key over every byte on the wire, computed from the advertised name (``wire_key``; engine 6).

Offgridtec ``SmartBat-A12345`` / ``SmartBat-B12294`` packs XOR each byte they receive and send with one key
that depends on the device: its number (12345) in upper-case hex (``3039``), each hex digit looked up in a
16-entry table and summed, plus 5 for type A or 8 for type B. Unlike ``scramble`` (WS Nova, whose frames
carry their key) nothing in a frame reveals the key, so it is applied at the session's edge: requests,
frames, the assembler and the simulator work in the clear, and :func:`xor_bytes` turns what the session
writes and receives into and from the wire form (the operation is its own inverse).

Bounds: a name is read only up to `WireKeySpec.max_digits` digits (a longer one has no key), so the work per
name is constant; :func:`xor_bytes` is one pass over a chunk the link already bounded.
"""

from __future__ import annotations

import fnmatch
import functools

from bmsgate.protocols.framingspec import WireKeySpec

__all__ = ["wire_key", "xor_bytes"]

_DECIMAL = frozenset("0123456789")


def wire_key(name: str | None, spec: WireKeySpec) -> int | None:
    """The key for the device named `name` (None: no name, a name the spec does not cover, or no number).

    Examples (the table of Offgridtec packs): ``SmartBat-A12345`` and ``SmartBat-B12294`` both give 0x10.
    """
    if not name or not fnmatch.fnmatchcase(name, spec.names) or len(name) <= max(spec.type_at, spec.digits_from):
        return None
    added = spec.add.get(name[spec.type_at])
    digits = name[spec.digits_from :]
    if added is None or len(digits) > spec.max_digits or not set(digits) <= _DECIMAL:
        return None
    hex_text = f"{int(digits):0{spec.hex_digits}X}"
    return (sum(spec.table[int(digit, 16)] for digit in hex_text) + added) & 0xFF


def xor_bytes(data: bytes | bytearray | memoryview, key: int) -> bytes:
    """`data` with every byte XOR-ed with `key` (scrambles and descrambles alike)."""
    return bytes(data).translate(_table(key & 0xFF))


@functools.lru_cache(maxsize=16)
def _table(key: int) -> bytes:
    return bytes(value ^ key for value in range(256))

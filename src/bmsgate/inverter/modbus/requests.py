"""Answer one Modbus request PDU from the :class:`RegisterStore` (pure: bytes in, bytes out).

What our Modbus TCP server (tcp.py) serves: the register functions the datastore implements, read
holding (3) and input (4) registers, write single (6) and multiple (16) registers, mask write (22) and
read/write multiple (23); any other function code, whatever its body, is answered "illegal function";
a served request whose body is cut short or whose counts break the Modbus limits "illegal data value";
addresses outside the map (or writes to what is not writable) "illegal data address". These are the
checks, in the same order, that pymodbus's request classes make (the RTU server still runs on them), so
both transports answer alike.
"""

from __future__ import annotations

import struct
from typing import Final

from bmsgate.inverter.modbus.store import RegisterStore

__all__ = ["ILLEGAL_ADDRESS", "ILLEGAL_FUNCTION", "ILLEGAL_VALUE", "answer"]

ILLEGAL_FUNCTION: Final = 0x01
ILLEGAL_ADDRESS: Final = 0x02
ILLEGAL_VALUE: Final = 0x03

_MAX_READ: Final = 125
"""Registers one read may ask for (what fits a 253-byte PDU)."""
_MAX_WRITE: Final = 123
_MAX_READ_WRITE: Final = 121
"""Registers FC 23 may write (its PDU also carries the read's range)."""


def _refuse(function_code: int, exception_code: int) -> bytes:
    return bytes([function_code | 0x80, exception_code])


def _read(store: RegisterStore, function_code: int, body: bytes) -> bytes:
    address, count = struct.unpack(">HH", body[:4])
    if not 1 <= count <= _MAX_READ:
        return _refuse(function_code, ILLEGAL_VALUE)
    if not store.validate(function_code, address, count):
        return _refuse(function_code, ILLEGAL_ADDRESS)
    values = store.getValues(function_code, address, count)
    return struct.pack(f">BB{count}H", function_code, 2 * count, *values)


def _write_single(store: RegisterStore, body: bytes) -> bytes:
    address, value = struct.unpack(">HH", body[:4])
    if not store.validate(6, address, 1):
        return _refuse(6, ILLEGAL_ADDRESS)
    store.setValues(6, address, [value])
    return struct.pack(">BHH", 6, address, value)


def _write_multiple(store: RegisterStore, body: bytes) -> bytes:
    address, count, byte_count = struct.unpack(">HHB", body[:5])
    if not 1 <= count <= _MAX_WRITE or byte_count != 2 * count:
        return _refuse(16, ILLEGAL_VALUE)
    values = struct.unpack(f">{count}H", body[5 : 5 + byte_count])
    if not store.validate(16, address, count):
        return _refuse(16, ILLEGAL_ADDRESS)
    store.setValues(16, address, list(values))
    return struct.pack(">BHH", 16, address, count)


def _mask_write(store: RegisterStore, body: bytes) -> bytes:
    address, and_mask, or_mask = struct.unpack(">HHH", body[:6])
    if not store.validate(22, address, 1):
        return _refuse(22, ILLEGAL_ADDRESS)
    current = store.getValues(22, address, 1)[0]
    store.setValues(22, address, [(current & and_mask) | (or_mask & ~and_mask & 0xFFFF)])
    return struct.pack(">BHHH", 22, address, and_mask, or_mask)


def _read_write(store: RegisterStore, body: bytes) -> bytes:
    read_address, read_count, write_address, write_count, byte_count = struct.unpack(">HHHHB", body[:9])
    if not 1 <= read_count <= _MAX_READ or not 1 <= write_count <= _MAX_READ_WRITE or byte_count != 2 * write_count:
        return _refuse(23, ILLEGAL_VALUE)
    values = struct.unpack(f">{write_count}H", body[9 : 9 + byte_count])
    if not store.validate(23, write_address, write_count) or not store.validate(23, read_address, read_count):
        return _refuse(23, ILLEGAL_ADDRESS)
    store.setValues(23, write_address, list(values))
    read = store.getValues(23, read_address, read_count)
    return struct.pack(f">BB{read_count}H", 23, 2 * read_count, *read)


def answer(store: RegisterStore, pdu: bytes) -> bytes:
    """The response PDU to request `pdu` (function code and body); a refusal is an exception response.

    Never raises for what a master sends: a body too short for its function is "illegal data value".
    """
    if not pdu:
        return _refuse(0, ILLEGAL_FUNCTION)
    function_code, body = pdu[0], pdu[1:]
    try:
        if function_code in (3, 4):
            return _read(store, function_code, body)
        if function_code == 6:
            return _write_single(store, body)
        if function_code == 16:
            return _write_multiple(store, body)
        if function_code == 22:
            return _mask_write(store, body)
        if function_code == 23:
            return _read_write(store, body)
    except struct.error:
        # The Modbus spec's answer to a request whose implied length is wrong.
        return _refuse(function_code, ILLEGAL_VALUE)
    return _refuse(function_code, ILLEGAL_FUNCTION)

"""Requests built for one device from its advertised name (``from_name``; pure, engine 6).

D-powercore ``DXB-*`` packs stay locked until they receive command 0x64 with a password: the last four hex
digits of their advertised name, big-endian. A definition says where those bytes go (`NameBytesSpec`); this
module fills them into the request frame and computes the request checksum anew. A device whose name is
unknown, does not match the request's glob, or whose last characters are no such number gets no frame
(``None``): the session then writes nothing for that request, as aiobmsble does for ``TBA-*`` packs and
for names it cannot read a password from.
"""

from __future__ import annotations

import fnmatch
import logging

from bmsgate.protocols.encode import fill_checksum
from bmsgate.protocols.framingspec import FramingSpec
from bmsgate.protocols.requestspec import NameBytesSpec, RequestSpec

__all__ = ["name_number", "request_frame"]

_LOGGER = logging.getLogger(__name__)

_DIGITS = {10: frozenset("0123456789"), 16: frozenset("0123456789abcdefABCDEF")}


def name_number(name: str | None, spec: NameBytesSpec) -> int | None:
    """The number the name's last `spec.chars` characters spell (None: no name, no match, or not a number)."""
    if not name or not fnmatch.fnmatchcase(name.lower(), spec.names.lower()) or len(name) < spec.chars:
        return None
    tail = name[-spec.chars :]
    if not set(tail) <= _DIGITS[spec.base]:
        return None
    value = int(tail, spec.base)
    return value if value < 1 << (8 * spec.size) else None


def request_frame(request: RequestSpec, framing: FramingSpec, device_name: str | None) -> bytes | None:
    """The frame to write for `request` to the device named `device_name` (None: write nothing)."""
    spec = request.from_name
    if spec is None:
        return request.frame
    value = name_number(device_name, spec)
    if value is None:
        _LOGGER.debug("request %s: no bytes from the device name %r; not sent", request.name, device_name)
        return None
    frame = bytearray(request.frame)
    frame[spec.at : spec.at + spec.size] = value.to_bytes(spec.size, spec.endian)
    fill_checksum(frame, framing.request_checksum or framing.checksum)
    return bytes(frame)

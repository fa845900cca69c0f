"""L2CAP reassembly: fragments (from HCI ACL packets or link-layer PDUs) back into whole PDUs.

An L2CAP basic frame is ``length (u16 LE) | channel id (u16 LE) | payload[length]``. A "start"
fragment opens a PDU per stream (connection + direction); "continuation" fragments append until the
announced length is reached. Channel 0x0004 carries ATT on LE links.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Hashable
from typing import Final

from bmsgate.capture.packets import Direction

__all__ = ["ATT_CHANNEL", "L2capPdu", "L2capReassembler"]

ATT_CHANNEL: Final = 0x0004
_BASIC_HEADER: Final = struct.Struct("<HH")


@dataclasses.dataclass(frozen=True, slots=True)
class L2capPdu:
    """One reassembled L2CAP PDU.

    Attributes:
        timestamp: time of the fragment that completed it.
        connection: the connection id (``hci:0x0040``, ``ll:0x8e89bed6``...).
        direction: which way it travelled.
        channel: the L2CAP channel id (CID).
        payload: the PDU payload without the basic header.
        offset: file offset of the packet that completed it.
    """

    timestamp: float
    connection: str
    direction: Direction
    channel: int
    payload: bytes
    offset: int


@dataclasses.dataclass(slots=True)
class _Pending:
    expected: int
    buffer: bytearray


class L2capReassembler:
    """Reassembles L2CAP PDUs independently per stream key.

    Problems (a continuation with nothing to continue, a start while a PDU is still incomplete,
    a fragment overflowing the announced length) are returned as messages for the caller's notes.
    """

    def __init__(self) -> None:
        self._pending: dict[Hashable, _Pending] = {}

    def start(self, stream: Hashable, fragment: bytes) -> tuple[tuple[int, bytes] | None, str | None]:
        """Begin a PDU with its first fragment; returns ``((channel, payload) | None, problem | None)``."""
        problem = "an L2CAP PDU was left incomplete by a new start fragment" if stream in self._pending else None
        self._pending.pop(stream, None)
        buffer = bytearray(fragment)
        if len(buffer) < _BASIC_HEADER.size:
            # The header itself may be split (rare, but legal); wait for the continuation.
            self._pending[stream] = _Pending(expected=-1, buffer=buffer)
            return None, problem
        length, _channel = _BASIC_HEADER.unpack_from(buffer)
        self._pending[stream] = _Pending(expected=length + _BASIC_HEADER.size, buffer=buffer)
        pdu, overflow = self._complete(stream)
        return pdu, problem or overflow

    def continue_(self, stream: Hashable, fragment: bytes) -> tuple[tuple[int, bytes] | None, str | None]:
        """Append a continuation fragment; returns like :meth:`start`."""
        pending = self._pending.get(stream)
        if pending is None:
            return None, "an L2CAP continuation fragment arrived without a start fragment"
        pending.buffer.extend(fragment)
        if pending.expected < 0 and len(pending.buffer) >= _BASIC_HEADER.size:
            length, _channel = _BASIC_HEADER.unpack_from(pending.buffer)
            pending.expected = length + _BASIC_HEADER.size
        return self._complete(stream)

    def _complete(self, stream: Hashable) -> tuple[tuple[int, bytes] | None, str | None]:
        pending = self._pending[stream]
        if pending.expected < 0 or len(pending.buffer) < pending.expected:
            return None, None
        del self._pending[stream]
        _length, channel = _BASIC_HEADER.unpack_from(pending.buffer)
        problem = None
        if len(pending.buffer) > pending.expected:
            problem = "an L2CAP PDU was longer than its header announced (extra bytes dropped)"
        return (channel, bytes(pending.buffer[_BASIC_HEADER.size : pending.expected])), problem

    def incomplete(self) -> int:
        """How many PDUs are still waiting for fragments (reported at the end of a capture)."""
        return len(self._pending)

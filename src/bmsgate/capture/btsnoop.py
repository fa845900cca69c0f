"""Reader for btsnoop files (Android's "Bluetooth HCI snoop log"), version 1.

Layout (all big-endian; see docs/capture-analysis.md for the sources):

- header, 16 bytes: ``b"btsnoop\\0"``, version (u32, 1), datalink (u32: 1001 un-encapsulated HCI,
  1002 HCI UART/H4);
- records: original length, included length, flags, cumulative drops (u32 each), timestamp (s64,
  microseconds since midnight 1 January of year 0), then `included length` bytes of packet.

Flag bit 0 is the direction (0 = sent host → controller, 1 = received); bit 1 marks commands/events
as opposed to data, which is the only way to tell packet types apart in datalink 1001.
"""

from __future__ import annotations

import struct
from typing import Final

from bmsgate.capture.packets import (
    CaptureBytes,
    CaptureFile,
    Direction,
    EmptyRecordGuard,
    LinkType,
    RawPacket,
    truncation_warning,
)
from bmsgate.errors import CaptureError

__all__ = ["BTSNOOP_MAGIC", "read_btsnoop"]

BTSNOOP_MAGIC: Final = b"btsnoop\x00"
_HEADER: Final = struct.Struct(">8sII")
_RECORD: Final = struct.Struct(">IIIIq")

#: Microseconds from the btsnoop epoch to the Unix epoch, as Android's writer and Wireshark use it.
_UNIX_EPOCH_IN_BTSNOOP_US: Final = 0x00DCDDB30F2F8000

_DATALINKS: Final = {1001: LinkType.BTSNOOP_HCI_UNENCAPSULATED, 1002: LinkType.BLUETOOTH_HCI_H4}
_DATALINK_NAMES: Final = {1003: "HCI BCSP", 1004: "HCI Serial (H5)"}


def read_btsnoop(data: CaptureBytes, *, source: str = "<capture>") -> CaptureFile:
    """Split a btsnoop file into packets.

    A last record cut short (the phone was still writing) is dropped with a warning; everything before
    it is returned.

    Raises:
        CaptureError: not a btsnoop v1 file, an unsupported datalink, or an impossible record.
    """
    if len(data) < _HEADER.size:
        raise CaptureError(
            f"file too short for a btsnoop header ({len(data)} of {_HEADER.size} bytes)",
            source=source,
            offset=len(data),
        )
    magic, version, datalink = _HEADER.unpack_from(data)
    if magic != BTSNOOP_MAGIC:
        raise CaptureError("not a btsnoop file (wrong magic)", source=source, offset=0)
    if version != 1:
        raise CaptureError(f"unsupported btsnoop version {version} (only 1 exists)", source=source, offset=8)
    link_type = _DATALINKS.get(datalink)
    if link_type is None:
        name = _DATALINK_NAMES.get(datalink, "unknown")
        raise CaptureError(
            f"unsupported btsnoop datalink {datalink} ({name}); bmsgate reads 1001 and 1002",
            source=source,
            offset=12,
        )

    packets: list[RawPacket] = []
    warnings: list[str] = []
    empty = EmptyRecordGuard(source)
    offset = _HEADER.size
    while offset < len(data):
        if len(data) - offset < _RECORD.size:
            warnings.append(truncation_warning(source, offset, "record header", _RECORD.size, len(data) - offset))
            break
        original_length, included_length, flags, _drops, timestamp_us = _RECORD.unpack_from(data, offset)
        if included_length > original_length:
            raise CaptureError(
                f"record included length {included_length} exceeds its original length {original_length}",
                source=source,
                offset=offset,
            )
        empty.check(included_length, offset)
        body_start = offset + _RECORD.size
        if len(data) - body_start < included_length:
            warnings.append(
                truncation_warning(source, offset, "record", _RECORD.size + included_length, len(data) - offset)
            )
            break
        packets.append(
            RawPacket(
                timestamp=(timestamp_us - _UNIX_EPOCH_IN_BTSNOOP_US) / 1e6,
                link_type=link_type,
                data=data[body_start : body_start + included_length],
                offset=offset,
                direction=Direction.RECEIVED if flags & 0x01 else Direction.SENT,
                is_command_or_event=bool(flags & 0x02),
                truncated=included_length < original_length,
            )
        )
        offset = body_start + included_length
    return CaptureFile(format="btsnoop", packets=tuple(packets), warnings=tuple(warnings))

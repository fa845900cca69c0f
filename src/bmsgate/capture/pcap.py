"""Reader for classic libpcap files (both byte orders, microsecond and nanosecond timestamps).

Layout (byte order given by the magic; see docs/capture-analysis.md for the sources):

- header, 24 bytes: magic (``a1b2c3d4`` µs or ``a1b23c4d`` ns), major (2), minor, two unused u32,
  snapshot length, link type (low 16 bits; the upper bits carry FCS information);
- records: seconds, fraction (µs or ns), captured length, original length (u32 each), then the
  captured bytes.
"""

from __future__ import annotations

import struct
from typing import Final

from bmsgate.capture.packets import CaptureBytes, CaptureFile, EmptyRecordGuard, LinkType, RawPacket, truncation_warning
from bmsgate.errors import CaptureError

__all__ = ["PCAP_MAGICS", "read_pcap", "supported_link_type"]

#: magic as it appears in the file → (struct byte order, fraction units per second)
PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_HEADER_SIZE: Final = 24
_RECORD_SIZE: Final = 16

_PCAP_LINK_TYPES: Final = frozenset(link for link in LinkType if link != LinkType.BTSNOOP_HCI_UNENCAPSULATED)
_LINK_TYPE_NAMES: Final = {
    1: "ETHERNET",
    101: "RAW",
    113: "LINUX_SLL",
    127: "IEEE802_11_RADIOTAP",
    251: "BLUETOOTH_LE_LL",
    254: "BLUETOOTH_LINUX_MONITOR",
    255: "BLUETOOTH_BREDR_BB",
}


def supported_link_type(link_type: int, *, source: str, offset: int | None) -> LinkType:
    """The :class:`LinkType` for a pcap/pcapng link type number.

    Raises:
        CaptureError: bmsgate cannot read packets of that link type.
    """
    if link_type in _PCAP_LINK_TYPES:
        return LinkType(link_type)
    name = _LINK_TYPE_NAMES.get(link_type)
    label = f"{link_type} (LINKTYPE_{name})" if name else str(link_type)
    readable = ", ".join(f"{value} (LINKTYPE_{LinkType(value).name})" for value in sorted(_PCAP_LINK_TYPES))
    raise CaptureError(f"unsupported link type {label}; bmsgate reads {readable}", source=source, offset=offset)


def read_pcap(data: CaptureBytes, *, source: str = "<capture>") -> CaptureFile:
    """Split a classic pcap file into packets.

    A last record cut short is dropped with a warning; everything before it is returned.

    Raises:
        CaptureError: not a pcap file, an unsupported version or link type, or an impossible record.
    """
    if len(data) < _HEADER_SIZE:
        raise CaptureError(
            f"file too short for a pcap header ({len(data)} of {_HEADER_SIZE} bytes)",
            source=source,
            offset=len(data),
        )
    byte_order_and_units = PCAP_MAGICS.get(data[:4])
    if byte_order_and_units is None:
        raise CaptureError("not a pcap file (wrong magic)", source=source, offset=0)
    order, units_per_second = byte_order_and_units
    major, minor, _zone, _sigfigs, _snaplen, link_field = struct.unpack_from(f"{order}HHiIII", data, 4)
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}.{minor}", source=source, offset=4)
    link_type = supported_link_type(link_field & 0xFFFF, source=source, offset=20)

    record = struct.Struct(f"{order}IIII")
    packets: list[RawPacket] = []
    warnings: list[str] = []
    empty = EmptyRecordGuard(source)
    offset = _HEADER_SIZE
    while offset < len(data):
        if len(data) - offset < _RECORD_SIZE:
            warnings.append(truncation_warning(source, offset, "record header", _RECORD_SIZE, len(data) - offset))
            break
        seconds, fraction, captured_length, original_length = record.unpack_from(data, offset)
        if captured_length > original_length:
            raise CaptureError(
                f"record captured length {captured_length} exceeds its original length {original_length}",
                source=source,
                offset=offset,
            )
        empty.check(captured_length, offset)
        body_start = offset + _RECORD_SIZE
        if len(data) - body_start < captured_length:
            warnings.append(
                truncation_warning(source, offset, "record", _RECORD_SIZE + captured_length, len(data) - offset)
            )
            break
        packets.append(
            RawPacket(
                timestamp=seconds + fraction / units_per_second,
                link_type=link_type,
                data=data[body_start : body_start + captured_length],
                offset=offset,
                truncated=captured_length < original_length,
            )
        )
        offset = body_start + captured_length
    return CaptureFile(format="pcap", packets=tuple(packets), warnings=tuple(warnings))

"""Reader for pcapng files: SHB, IDB, EPB, SPB (and the obsolete Packet Block), both byte orders.

Every block is ``type (u32) | total length (u32) | body | total length (u32)`` with the total a multiple
of 4; the Section Header Block's byte-order magic ``1a2b3c4d`` fixes the byte order of its section.
Interfaces are numbered per section in the order of their Interface Description Blocks, which carry
the link type and the options ``if_tsresol`` (code 9) and ``if_tsoffset`` (code 14). Unknown block
types are skipped, as the specification asks. Sources: docs/capture-analysis.md.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Final

from bmsgate.capture.packets import CaptureBytes, CaptureFile, LinkType, RawPacket, truncation_warning
from bmsgate.capture.pcap import supported_link_type
from bmsgate.errors import CaptureError

__all__ = ["PCAPNG_MAGIC", "read_pcapng"]

PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_SECTION_HEADER: Final = 0x0A0D0D0A
_INTERFACE_DESCRIPTION: Final = 0x00000001
_OBSOLETE_PACKET: Final = 0x00000002
_SIMPLE_PACKET: Final = 0x00000003
_ENHANCED_PACKET: Final = 0x00000006
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_OPTION_END: Final = 0
_OPTION_TSRESOL: Final = 9
_OPTION_TSOFFSET: Final = 14
_MIN_BLOCK: Final = 12


@dataclasses.dataclass(frozen=True, slots=True)
class _Interface:
    link_type: int
    supported: LinkType | None
    snap_length: int
    units_per_second: int
    offset_seconds: int


def read_pcapng(data: CaptureBytes, *, source: str = "<capture>") -> CaptureFile:
    """Split a pcapng file into packets.

    A last block cut short is dropped with a warning. Packets of interfaces with a link type bmsgate
    cannot read are skipped with a warning, unless no interface is readable at all.

    Raises:
        CaptureError: not a pcapng file, a malformed block, a packet on an undeclared interface, or only
            unsupported link types.
    """
    if data[:4] != PCAPNG_MAGIC:
        raise CaptureError("not a pcapng file (the first block is not a Section Header Block)", source=source, offset=0)
    packets: list[RawPacket] = []
    warnings: list[str] = []
    unsupported: dict[int, int] = {}
    interfaces: list[_Interface] = []
    order = "<"
    offset = 0
    while offset < len(data):
        if len(data) - offset < _MIN_BLOCK:
            warnings.append(truncation_warning(source, offset, "block header", _MIN_BLOCK, len(data) - offset))
            break
        if data[offset : offset + 4] == PCAPNG_MAGIC:
            order = _section_byte_order(data, offset, source)
            interfaces = []
        block_type, total_length = struct.unpack_from(f"{order}II", data, offset)
        if total_length < _MIN_BLOCK or total_length % 4:
            raise CaptureError(
                f"block total length {total_length} is not a multiple of 4 of at least {_MIN_BLOCK}",
                source=source,
                offset=offset + 4,
            )
        if len(data) - offset < total_length:
            warnings.append(truncation_warning(source, offset, "block", total_length, len(data) - offset))
            break
        (trailing_length,) = struct.unpack_from(f"{order}I", data, offset + total_length - 4)
        if trailing_length != total_length:
            raise CaptureError(
                f"block total length {total_length} does not match its trailing copy {trailing_length}",
                source=source,
                offset=offset + total_length - 4,
            )
        body = data[offset + 8 : offset + total_length - 4]
        if block_type == _INTERFACE_DESCRIPTION:
            interfaces.append(_interface(body, order, source, offset))
        elif block_type in (_ENHANCED_PACKET, _SIMPLE_PACKET, _OBSOLETE_PACKET):
            packet = _packet(block_type, body, order, interfaces, source, offset)
            if packet is not None:
                interface, captured, timestamp, original_length = packet
                if interface.supported is None:
                    unsupported[interface.link_type] = unsupported.get(interface.link_type, 0) + 1
                else:
                    packets.append(
                        RawPacket(
                            timestamp=timestamp,
                            link_type=interface.supported,
                            data=captured,
                            offset=offset,
                            truncated=len(captured) < original_length,
                        )
                    )
        offset += total_length

    if unsupported:
        if not packets:
            first = min(unsupported)
            supported_link_type(first, source=source, offset=None)
        warnings.extend(
            f"{source}: skipped {count} packets of unsupported link type {link_type}"
            for link_type, count in sorted(unsupported.items())
        )
    return CaptureFile(format="pcapng", packets=tuple(packets), warnings=tuple(warnings))


def _section_byte_order(data: CaptureBytes, offset: int, source: str) -> str:
    magic = data[offset + 8 : offset + 12]
    if len(magic) < 4:
        raise CaptureError("Section Header Block too short for its byte-order magic", source=source, offset=offset)
    if struct.unpack("<I", magic)[0] == _BYTE_ORDER_MAGIC:
        order = "<"
    elif struct.unpack(">I", magic)[0] == _BYTE_ORDER_MAGIC:
        order = ">"
    else:
        raise CaptureError("bad pcapng byte-order magic", source=source, offset=offset + 8)
    (major,) = struct.unpack_from(f"{order}H", data, offset + 12) if len(data) >= offset + 14 else (1,)
    if major != 1:
        raise CaptureError(f"unsupported pcapng major version {major}", source=source, offset=offset + 12)
    return order


def _interface(body: bytes, order: str, source: str, offset: int) -> _Interface:
    if len(body) < 8:
        raise CaptureError("Interface Description Block too short", source=source, offset=offset)
    link_type, _reserved, snap_length = struct.unpack_from(f"{order}HHI", body)
    units_per_second = 1_000_000
    offset_seconds = 0
    for code, value in _options(body, 8, order, source, offset):
        if code == _OPTION_TSRESOL and len(value) >= 1:
            exponent = value[0] & 0x7F
            base = 2 if value[0] & 0x80 else 10
            # Resolutions finer than 10^-18 s or 2^-63 s do not exist in real files; refusing them keeps
            # the arithmetic bounded on garbage input.
            if (base == 10 and exponent > 18) or (base == 2 and exponent > 63):
                raise CaptureError(f"impossible if_tsresol {value[0]:#04x}", source=source, offset=offset)
            units_per_second = base**exponent
        elif code == _OPTION_TSOFFSET and len(value) >= 8:
            (offset_seconds,) = struct.unpack_from(f"{order}q", value)
    supported: LinkType | None
    try:
        supported = supported_link_type(link_type, source=source, offset=offset)
    except CaptureError:
        supported = None
    return _Interface(link_type, supported, snap_length, units_per_second, offset_seconds)


def _packet(
    block_type: int, body: bytes, order: str, interfaces: list[_Interface], source: str, offset: int
) -> tuple[_Interface, bytes, float, int] | None:
    if block_type == _SIMPLE_PACKET:
        if len(body) < 4:
            raise CaptureError("Simple Packet Block too short", source=source, offset=offset)
        interface = _declared_interface(0, interfaces, source, offset)
        (original_length,) = struct.unpack_from(f"{order}I", body)
        captured_length = min(original_length, len(body) - 4)
        if interface.snap_length:
            captured_length = min(captured_length, interface.snap_length)
        # A Simple Packet Block has no timestamp: such packets keep time 0 relative to the capture.
        return interface, body[4 : 4 + captured_length], 0.0, original_length
    if block_type == _ENHANCED_PACKET:
        if len(body) < 20:
            raise CaptureError("Enhanced Packet Block too short", source=source, offset=offset)
        interface_id, high, low, captured_length, original_length = struct.unpack_from(f"{order}IIIII", body)
        header = 20
    else:
        if len(body) < 20:
            raise CaptureError("Packet Block too short", source=source, offset=offset)
        interface_id, _drops, high, low, captured_length, original_length = struct.unpack_from(f"{order}HHIIII", body)
        header = 20
    interface = _declared_interface(interface_id, interfaces, source, offset)
    if captured_length > len(body) - header:
        raise CaptureError(
            f"packet captured length {captured_length} runs past the end of its block",
            source=source,
            offset=offset,
        )
    timestamp = ((high << 32) | low) / interface.units_per_second + interface.offset_seconds
    return interface, body[header : header + captured_length], timestamp, original_length


def _declared_interface(interface_id: int, interfaces: list[_Interface], source: str, offset: int) -> _Interface:
    if interface_id >= len(interfaces):
        raise CaptureError(
            f"packet refers to interface {interface_id}, but only {len(interfaces)} are declared",
            source=source,
            offset=offset,
        )
    return interfaces[interface_id]


def _options(body: bytes, start: int, order: str, source: str, offset: int) -> list[tuple[int, bytes]]:
    options: list[tuple[int, bytes]] = []
    position = start
    while len(body) - position >= 4:
        code, length = struct.unpack_from(f"{order}HH", body, position)
        if code == _OPTION_END:
            break
        value_start = position + 4
        if len(body) - value_start < length:
            raise CaptureError(f"option {code} runs past the end of its block", source=source, offset=offset)
        options.append((code, body[value_start : value_start + length]))
        position = value_start + (length + 3) // 4 * 4
    return options

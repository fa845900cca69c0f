"""Build capture files byte by byte from the format specifications (test helpers only).

Layouts as documented in docs/capture-analysis.md: btsnoop (big-endian), pcap, pcapng, H4/ACL/L2CAP/ATT,
the nRF Sniffer header and LINKTYPE_BLUETOOTH_LE_LL_WITH_PHDR.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

BTSNOOP_EPOCH_DELTA_US = 0x00DCDDB30F2F8000
T0 = 1_700_000_000.0
SENT, RECEIVED = 0, 1

# -- containers ------------------------------------------------------------------------------------


def btsnoop(records: Iterable[tuple[float, int, bytes]], *, datalink: int = 1002, command_flag: bool = False) -> bytes:
    """Records are (unix time, direction flag 0 sent / 1 received, packet)."""
    out = bytearray(b"btsnoop\x00" + struct.pack(">II", 1, datalink))
    for timestamp, direction, packet in records:
        flags = direction | (0x02 if command_flag else 0)
        micros = round(timestamp * 1e6) + BTSNOOP_EPOCH_DELTA_US
        out += struct.pack(">IIIIq", len(packet), len(packet), flags, 0, micros) + packet
    return bytes(out)


def btsnoop_h4(records: Iterable[tuple[float, int, bytes]]) -> bytes:
    """btsnoop with datalink 1002; the command/event flag set for H4 types 0x01/0x04."""
    out = bytearray(b"btsnoop\x00" + struct.pack(">II", 1, 1002))
    for timestamp, direction, packet in records:
        flags = direction | (0x02 if packet[0] in (0x01, 0x04) else 0)
        micros = round(timestamp * 1e6) + BTSNOOP_EPOCH_DELTA_US
        out += struct.pack(">IIIIq", len(packet), len(packet), flags, 0, micros) + packet
    return bytes(out)


def pcap(
    link_type: int, packets: Iterable[tuple[float, bytes]], *, big_endian: bool = False, nanos: bool = False
) -> bytes:
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    units = 1_000_000_000 if nanos else 1_000_000
    out = bytearray(struct.pack(f"{order}IHHiIII", magic, 2, 4, 0, 0, 65535, link_type))
    for timestamp, packet in packets:
        seconds = int(timestamp)
        fraction = round((timestamp - seconds) * units)
        out += struct.pack(f"{order}IIII", seconds, fraction, len(packet), len(packet)) + packet
    return bytes(out)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    padded = body + bytes(-len(body) % 4)
    total = len(padded) + 12
    return struct.pack(f"{order}II", block_type, total) + padded + struct.pack(f"{order}I", total)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(f"{order}HH", code, len(value)) + value + bytes(-len(value) % 4)


def pcapng_section(order: str = "<") -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(f"{order}IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(order, 0, b""))


def pcapng_interface(link_type: int, *, order: str = "<", tsresol: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:
        options = _option(order, 9, bytes((tsresol,))) + _option(order, 0, b"")
    return _block(order, 1, struct.pack(f"{order}HHI", link_type, 0, 0) + options)


def pcapng_packet(
    interface: int, timestamp: float, packet: bytes, *, order: str = "<", units: int = 1_000_000
) -> bytes:
    ticks = round(timestamp * units)
    body = struct.pack(f"{order}IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(packet), len(packet))
    return _block(order, 6, body + packet + bytes(-len(packet) % 4))


def pcapng_simple(packet: bytes, *, order: str = "<") -> bytes:
    return _block(order, 3, struct.pack(f"{order}I", len(packet)) + packet)


def pcapng_unknown_block(order: str = "<") -> bytes:
    return _block(order, 0x0BAD, b"\x01\x02\x03")


# -- HCI -------------------------------------------------------------------------------------------


def l2cap(payload: bytes, channel: int = 0x0004) -> bytes:
    return struct.pack("<HH", len(payload), channel) + payload


def acl(handle: int, data: bytes, *, boundary: int = 0b10) -> bytes:
    """An H4 ACL packet (type byte 0x02) carrying one fragment."""
    return b"\x02" + struct.pack("<HH", handle | boundary << 12, len(data)) + data


def acl_fragments(handle: int, pdu: bytes, size: int) -> list[bytes]:
    """Split an L2CAP PDU across ACL packets of at most `size` bytes."""
    parts = [pdu[index : index + size] for index in range(0, len(pdu), size)]
    return [acl(handle, part, boundary=0b10 if index == 0 else 0b01) for index, part in enumerate(parts)]


def address(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))[::-1]


def le_connection_complete(handle: int, peer: str, *, enhanced: bool = False, status: int = 0) -> bytes:
    params = struct.pack("<BBHBB", 0x0A if enhanced else 0x01, status, handle, 1, 0) + address(peer)
    if enhanced:
        params += bytes(12)
    params += struct.pack("<HHHB", 24, 0, 72, 0)
    return b"\x04\x3e" + bytes((len(params),)) + params


def disconnection_complete(handle: int) -> bytes:
    params = struct.pack("<BHB", 0, handle, 0x13)
    return b"\x04\x05" + bytes((len(params),)) + params


def advertising_report(peer: str, name: str) -> bytes:
    data = bytes((len(name) + 1, 0x09)) + name.encode()
    report = b"\x00\x00" + address(peer) + bytes((len(data),)) + data + b"\xc5"
    params = b"\x02\x01" + report
    return b"\x04\x3e" + bytes((len(params),)) + params


# -- ATT -------------------------------------------------------------------------------------------


def uuid16(value: int) -> bytes:
    return struct.pack("<H", value)


def att_write_request(handle: int, value: bytes) -> bytes:
    return b"\x12" + struct.pack("<H", handle) + value


def att_write_command(handle: int, value: bytes) -> bytes:
    return b"\x52" + struct.pack("<H", handle) + value


def att_notification(handle: int, value: bytes) -> bytes:
    return b"\x1b" + struct.pack("<H", handle) + value


def att_indication(handle: int, value: bytes) -> bytes:
    return b"\x1d" + struct.pack("<H", handle) + value


def att_read_by_group_type(services: Sequence[tuple[int, int, int]]) -> tuple[bytes, bytes]:
    request = b"\x10" + struct.pack("<HH", 1, 0xFFFF) + uuid16(0x2800)
    response = b"\x11\x06" + b"".join(struct.pack("<HHH", start, end, uuid) for start, end, uuid in services)
    return request, response


def att_characteristics(declarations: Sequence[tuple[int, int, int, int]]) -> tuple[bytes, bytes]:
    """Declarations are (declaration handle, properties, value handle, 16-bit uuid)."""
    request = b"\x08" + struct.pack("<HH", 1, 0xFFFF) + uuid16(0x2803)
    response = b"\x09\x07" + b"".join(
        struct.pack("<HBHH", handle, properties, value_handle, uuid)
        for handle, properties, value_handle, uuid in declarations
    )
    return request, response


def att_find_information(entries: Sequence[tuple[int, int]]) -> tuple[bytes, bytes]:
    request = b"\x04" + struct.pack("<HH", 1, 0xFFFF)
    response = b"\x05\x01" + b"".join(struct.pack("<HH", handle, uuid) for handle, uuid in entries)
    return request, response


def split(data: bytes, size: int = 20) -> list[bytes]:
    return [data[index : index + size] for index in range(0, len(data), size)]


# -- over the air ----------------------------------------------------------------------------------

ADVERTISING_AA = 0x8E89BED6


def ll_data(access_address: int, llid: int, payload: bytes, *, sn: int = 0, nesn: int = 0) -> bytes:
    """Access address + data PDU header + payload + a dummy 3-byte CRC."""
    header = bytes((llid | nesn << 2 | sn << 3, len(payload)))
    return struct.pack("<I", access_address) + header + payload + b"\x00\x00\x00"


def ll_connect_ind(initiator: str, advertiser: str, access_address: int) -> bytes:
    body = address(initiator) + address(advertiser) + struct.pack("<I", access_address) + bytes(18)
    header = bytes((0x05 | 0x80, len(body)))  # CONNECT_IND, RxAdd = random
    return struct.pack("<I", ADVERTISING_AA) + header + body + b"\x00\x00\x00"


def ll_adv_ind(advertiser: str, name: str) -> bytes:
    data = bytes((len(name) + 1, 0x09)) + name.encode()
    body = address(advertiser) + data
    return struct.pack("<I", ADVERTISING_AA) + bytes((0x00, len(body))) + body + b"\x00\x00\x00"


def nordic(
    le_packet: bytes, *, master_to_slave: bool, crc_ok: bool = True, encrypted: bool = False, version: int = 2
) -> bytes:
    """An nRF Sniffer record: board id, 6-byte header, 10-byte packet header, LE packet."""
    flags = (0x01 if crc_ok else 0) | (0x02 if master_to_slave else 0) | (0x04 if encrypted else 0)
    advertising = le_packet[:4] == struct.pack("<I", ADVERTISING_AA)
    payload = bytes((10, flags, 37 if advertising else 5, 60)) + struct.pack("<HI", 7, 1234) + le_packet
    if version == 1:
        header = bytes((6, len(payload), 1)) + struct.pack("<H", 1) + bytes((0x06,))
    else:
        header = struct.pack("<H", len(payload)) + bytes((version,)) + struct.pack("<H", 1)
        header += bytes((0x02 if advertising else 0x06,))
    return b"\x00" + header + payload


def phdr(le_packet: bytes, *, pdu_type: int, crc_checked: bool = True, crc_valid: bool = True) -> bytes:
    flags = 0x0001 | pdu_type << 7 | (0x0400 if crc_checked else 0) | (0x0800 if crc_valid else 0)
    return bytes((5, 0xC4, 0x80, 0)) + struct.pack("<IH", 0, flags) + le_packet

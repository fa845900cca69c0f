"""Capture readers: btsnoop, pcap, pcapng; HCI and over-the-air paths; ATT timeline; damaged files."""

from __future__ import annotations

import struct

import pytest

from bmsgate.capture.att import AttKind, uuid_from_bytes
from bmsgate.capture.packets import Direction
from bmsgate.capture.timeline import read_capture
from bmsgate.errors import CaptureError
from tests.capture.capturebuilders import (
    RECEIVED,
    SENT,
    T0,
    acl,
    acl_fragments,
    advertising_report,
    att_characteristics,
    att_find_information,
    att_indication,
    att_notification,
    att_read_by_group_type,
    att_write_command,
    att_write_request,
    btsnoop,
    btsnoop_h4,
    disconnection_complete,
    l2cap,
    le_connection_complete,
    ll_adv_ind,
    ll_connect_ind,
    ll_data,
    nordic,
    pcap,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    pcapng_simple,
    pcapng_unknown_block,
    phdr,
)

FF01 = "0000ff01-0000-1000-8000-00805f9b34fb"
FF02 = "0000ff02-0000-1000-8000-00805f9b34fb"
FF00 = "0000ff00-0000-1000-8000-00805f9b34fb"
CCCD = "00002902-0000-1000-8000-00805f9b34fb"
PEER = "A4:C1:37:01:02:03"


def discovery(handle: int) -> list[tuple[float, int, bytes]]:
    """GATT discovery of service ff00 with notify ff01 (value 0x0011, CCCD 0x0012) and write ff02 (0x0015)."""
    services = att_read_by_group_type([(0x0010, 0x0020, 0xFF00)])
    characteristics = att_characteristics([(0x0010 + 0, 0x10, 0x0011, 0xFF01), (0x0014, 0x0C, 0x0015, 0xFF02)])
    descriptors = att_find_information([(0x0012, 0x2902)])
    records = []
    for index, (request, response) in enumerate((services, characteristics, descriptors)):
        records.append((T0 + 0.01 * index, SENT, acl(handle, l2cap(request))))
        records.append((T0 + 0.01 * index + 0.005, RECEIVED, acl(handle, l2cap(response))))
    return records


def jbd_like_session(handle: int = 0x0040) -> bytes:
    records = [
        (T0 - 1, RECEIVED, advertising_report(PEER, "JBD-SP04S034")),
        (T0 - 0.5, RECEIVED, le_connection_complete(handle, PEER)),
        *discovery(handle),
        (T0 + 0.1, SENT, acl(handle, l2cap(att_write_request(0x0012, b"\x01\x00")))),
        (T0 + 0.2, SENT, acl(handle, l2cap(att_write_command(0x0015, bytes.fromhex("dda50300fffd77"))))),
        (T0 + 0.25, RECEIVED, acl(handle, l2cap(att_notification(0x0011, bytes(range(20)))))),
        (T0 + 0.26, RECEIVED, acl(handle, l2cap(att_notification(0x0011, b"\x77")))),
        (T0 + 0.3, RECEIVED, disconnection_complete(handle)),
    ]
    return btsnoop_h4(records)


def test_btsnoop_session_gives_connection_uuids_and_timeline() -> None:
    timeline = read_capture(jbd_like_session(), source="snoop.log")
    assert timeline.format == "btsnoop"
    assert timeline.warnings == ()
    (connection,) = timeline.connections
    assert connection.id == "hci:0x0040"
    assert connection.peer_address == PEER
    assert connection.peer_name == "JBD-SP04S034"
    assert connection.started == pytest.approx(T0 - 0.5)
    assert connection.ended == pytest.approx(T0 + 0.3)
    kinds = [(event.kind, event.handle, event.uuid, event.direction) for event in timeline.events]
    assert kinds == [
        (AttKind.WRITE, 0x0012, CCCD, Direction.SENT),
        (AttKind.WRITE_CMD, 0x0015, FF02, Direction.SENT),
        (AttKind.NOTIFY, 0x0011, FF01, Direction.RECEIVED),
        (AttKind.NOTIFY, 0x0011, FF01, Direction.RECEIVED),
    ]
    assert timeline.events[1].value == bytes.fromhex("dda50300fffd77")
    assert timeline.events[1].timestamp == pytest.approx(T0 + 0.2)
    characteristics = {c.handle: c for c in timeline.characteristics}
    assert characteristics[0x0011].uuid == FF01
    assert characteristics[0x0011].service == FF00
    assert characteristics[0x0011].property_names == ("notify",)
    assert characteristics[0x0015].property_names == ("write_without_response", "write")
    assert characteristics[0x0012].uuid == CCCD


def test_l2cap_fragments_across_acl_packets_with_two_connections_interleaved() -> None:
    long_value = bytes(range(60))
    first = acl_fragments(0x0001, l2cap(att_notification(0x0011, long_value)), 9)
    second = acl_fragments(0x0002, l2cap(att_notification(0x0021, long_value[::-1])), 7)
    records = [
        (T0, RECEIVED, le_connection_complete(0x0001, "11:22:33:44:55:66")),
        (T0, RECEIVED, le_connection_complete(0x0002, "66:55:44:33:22:11", enhanced=True)),
    ]
    for index in range(max(len(first), len(second))):
        if index < len(first):
            records.append((T0 + index, RECEIVED, first[index]))
        if index < len(second):
            records.append((T0 + index + 0.5, RECEIVED, second[index]))
    timeline = read_capture(btsnoop_h4(records))
    assert timeline.warnings == ()
    by_connection = {event.connection: event.value for event in timeline.events}
    assert by_connection == {"hci:0x0001": long_value, "hci:0x0002": long_value[::-1]}
    assert {c.peer_address for c in timeline.connections} == {"11:22:33:44:55:66", "66:55:44:33:22:11"}


def test_reused_handle_after_disconnection_is_a_new_connection() -> None:
    records = [
        (T0, RECEIVED, le_connection_complete(0x0040, PEER)),
        (T0 + 1, RECEIVED, acl(0x0040, l2cap(att_notification(1, b"a")))),
        (T0 + 2, RECEIVED, disconnection_complete(0x0040)),
        (T0 + 3, RECEIVED, le_connection_complete(0x0040, "01:02:03:04:05:06")),
        (T0 + 4, RECEIVED, acl(0x0040, l2cap(att_indication(1, b"b")))),
    ]
    timeline = read_capture(btsnoop_h4(records))
    assert [c.id for c in timeline.connections] == ["hci:0x0040", "hci:0x0040#2"]
    assert [(e.connection, e.kind) for e in timeline.events] == [
        ("hci:0x0040", AttKind.NOTIFY),
        ("hci:0x0040#2", AttKind.INDICATE),
    ]


def test_unencapsulated_hci_uses_the_record_flags() -> None:
    packet = acl(0x0003, l2cap(att_write_request(0x0015, b"\x01")))[1:]  # without the H4 byte
    timeline = read_capture(btsnoop([(T0, SENT, packet)], datalink=1001))
    assert [(e.kind, e.direction) for e in timeline.events] == [(AttKind.WRITE, Direction.SENT)]


def test_prepare_and_execute_write_join_into_one_write() -> None:
    prepare = [b"\x16" + struct.pack("<HH", 0x15, offset) + part for offset, part in ((0, b"abc"), (3, b"def"))]
    records = [(T0 + i, SENT, acl(1, l2cap(pdu))) for i, pdu in enumerate([*prepare, b"\x18\x01"])]
    timeline = read_capture(btsnoop_h4(records))
    assert [(e.kind, e.value) for e in timeline.events] == [(AttKind.WRITE, b"abcdef")]


def test_multiple_handle_value_notification_and_read_response() -> None:
    multiple = b"\x23" + struct.pack("<HH", 5, 2) + b"ab" + struct.pack("<HH", 6, 1) + b"c"
    records = [
        (T0, RECEIVED, acl(1, l2cap(multiple))),
        (T0 + 1, SENT, acl(1, l2cap(b"\x0a\x09\x00"))),
        (T0 + 2, RECEIVED, acl(1, l2cap(b"\x0b" + b"v1.0"))),
    ]
    timeline = read_capture(btsnoop_h4(records))
    assert [(e.kind, e.handle, e.value) for e in timeline.events] == [
        (AttKind.NOTIFY, 5, b"ab"),
        (AttKind.NOTIFY, 6, b"c"),
        (AttKind.READ, 9, b"v1.0"),
    ]


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_h4_with_direction_header(big_endian: bool, nanos: bool) -> None:
    sent = struct.pack(">I", 0) + acl(1, l2cap(att_write_command(0x15, b"\x01\x02")))
    received = struct.pack(">I", 1) + acl(1, l2cap(att_notification(0x11, b"\x03")))
    data = pcap(201, [(T0 + 0.123456, sent), (T0 + 1.5, received)], big_endian=big_endian, nanos=nanos)
    timeline = read_capture(data)
    assert timeline.format == "pcap"
    assert [(e.direction, e.value) for e in timeline.events] == [
        (Direction.SENT, b"\x01\x02"),
        (Direction.RECEIVED, b"\x03"),
    ]
    assert timeline.events[0].timestamp == pytest.approx(T0 + 0.123456, abs=1e-6)


def test_pcap_plain_h4_infers_direction_from_att_roles() -> None:
    data = pcap(
        187, [(T0, acl(1, l2cap(att_write_request(0x15, b"x")))), (T0 + 1, acl(1, l2cap(att_notification(0x11, b"y"))))]
    )
    timeline = read_capture(data)
    assert [e.direction for e in timeline.events] == [Direction.SENT, Direction.RECEIVED]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolution_and_block_kinds(order: str) -> None:
    notify = struct.pack(">I", 1) + acl(1, l2cap(att_notification(0x11, b"\xaa")))
    data = (
        pcapng_section(order)
        + pcapng_interface(1, order=order)  # Ethernet: skipped with a warning
        + pcapng_interface(201, order=order, tsresol=9)
        + pcapng_unknown_block(order)
        + pcapng_packet(0, T0, b"\x00" * 14, order=order)
        + pcapng_packet(1, T0 + 0.000000123, notify, order=order, units=1_000_000_000)
    )
    timeline = read_capture(data)
    assert timeline.format == "pcapng"
    assert [e.value for e in timeline.events] == [b"\xaa"]
    assert timeline.events[0].timestamp == pytest.approx(T0 + 0.000000123, abs=1e-6)
    assert any("unsupported link type 1" in warning for warning in timeline.warnings)


def test_pcapng_simple_packet_block_and_second_section() -> None:
    first = acl(1, l2cap(att_notification(0x11, b"\x01")))
    second = struct.pack(">I", 0) + acl(1, l2cap(att_write_command(0x15, b"\x02")))
    data = (
        pcapng_section("<")
        + pcapng_interface(187)
        + pcapng_simple(first)
        + pcapng_section(">")
        + pcapng_interface(201, order=">")
        + pcapng_packet(0, T0, second, order=">")
    )
    timeline = read_capture(data)
    assert [e.value for e in timeline.events] == [b"\x01", b"\x02"]


def test_pcapng_with_only_unsupported_link_types_names_them() -> None:
    data = pcapng_section() + pcapng_interface(1) + pcapng_packet(0, T0, bytes(20))
    with pytest.raises(CaptureError, match="unsupported link type 1 \\(LINKTYPE_ETHERNET\\)"):
        read_capture(data)


AA = 0x50654D1A


def nordic_session(*, version: int = 2) -> bytes:
    write = l2cap(att_write_request(0x0015, bytes.fromhex("dda50400fffc77")))
    notification = l2cap(att_notification(0x0011, bytes(range(30))))
    packets = [
        nordic(ll_adv_ind(PEER, "JBD-Pack"), master_to_slave=False, version=version),
        nordic(ll_connect_ind("C0:FF:EE:00:00:01", PEER, AA), master_to_slave=True, version=version),
        nordic(ll_data(AA, 0b01, b"", sn=0), master_to_slave=True, version=version),  # empty PDU
        nordic(ll_data(AA, 0b11, b"\x0c\x09\x00\x00\x00\x00"), master_to_slave=False, version=version),  # LL control
        nordic(ll_data(AA, 0b10, write, sn=1), master_to_slave=True, version=version),
        nordic(ll_data(AA, 0b10, write, sn=1), master_to_slave=True, version=version),  # retransmission
        nordic(ll_data(AA, 0b10, notification[:20], sn=0), master_to_slave=False, version=version),
        nordic(ll_data(AA, 0b01, b"garbage", sn=1), master_to_slave=False, crc_ok=False, version=version),
        nordic(ll_data(AA, 0b01, notification[20:], sn=1), master_to_slave=False, version=version),
    ]
    return pcap(272, [(T0 + index * 0.01, packet) for index, packet in enumerate(packets)])


@pytest.mark.parametrize("version", [1, 2, 3])
def test_nrf_sniffer_capture(version: int) -> None:
    timeline = read_capture(nordic_session(version=version))
    (connection,) = timeline.connections
    assert connection.id == "ll:0x50654d1a"
    assert connection.peer_address == PEER
    assert connection.peer_address_random is True
    assert connection.peer_name == "JBD-Pack"
    assert [(e.kind, e.direction, e.value) for e in timeline.events] == [
        (AttKind.WRITE, Direction.SENT, bytes.fromhex("dda50400fffc77")),
        (AttKind.NOTIFY, Direction.RECEIVED, bytes(range(30))),
    ]
    warnings = " ".join(timeline.warnings)
    assert "retransmissions" in warnings
    assert "bad CRC" in warnings


def test_nrf_sniffer_encrypted_connection_is_reported_and_skipped() -> None:
    packets = [
        nordic(ll_connect_ind("C0:FF:EE:00:00:01", PEER, AA), master_to_slave=True),
        nordic(ll_data(AA, 0b11, b"\x03" + bytes(22)), master_to_slave=True),  # LL_ENC_REQ
        nordic(ll_data(AA, 0b10, bytes(12), sn=1), master_to_slave=True, encrypted=True),
    ]
    timeline = read_capture(pcap(272, [(T0, packet) for packet in packets]))
    assert timeline.events == ()
    assert timeline.connections[0].encrypted
    assert any("encrypted" in warning for warning in timeline.warnings)


def test_le_ll_with_phdr_directions() -> None:
    write = l2cap(att_write_command(0x15, b"\x01"))
    notify = l2cap(att_notification(0x11, b"\x02"))
    packets = [
        phdr(ll_connect_ind("C0:FF:EE:00:00:01", PEER, AA), pdu_type=0),
        phdr(ll_data(AA, 0b10, write, sn=0), pdu_type=2),
        phdr(ll_data(AA, 0b10, notify, sn=0), pdu_type=3),
        phdr(ll_data(AA, 0b10, notify, sn=1), pdu_type=3, crc_valid=False),
    ]
    timeline = read_capture(pcap(256, [(T0 + i, p) for i, p in enumerate(packets)]))
    assert [(e.direction, e.value) for e in timeline.events] == [
        (Direction.SENT, b"\x01"),
        (Direction.RECEIVED, b"\x02"),
    ]


# -- damaged and unsupported files ------------------------------------------------------------------


def test_truncated_last_record_keeps_earlier_events_and_warns() -> None:
    data = jbd_like_session()
    timeline = read_capture(data[:-5], source="snoop.log")
    assert len(timeline.events) == 4  # the cut record was the disconnection
    (warning,) = timeline.warnings
    assert "truncated record at byte offset" in warning
    assert warning.startswith("snoop.log")


def test_truncated_pcapng_block_warns() -> None:
    data = pcapng_section() + pcapng_interface(187) + pcapng_packet(0, T0, acl(1, l2cap(att_notification(1, b"x"))))
    timeline = read_capture(data[:-3])
    assert timeline.events == ()
    assert "truncated block" in timeline.warnings[0]


@pytest.mark.parametrize(
    ("data", "offset", "fragment"),
    [
        (b"", 0, "empty"),
        (b"hello world, not a capture", 0, "not a btsnoop, pcap or pcapng file"),
        (b"btsnoop\x00\x00\x00", 10, "too short"),
        (b"btsnoop\x00" + struct.pack(">II", 2, 1002), 8, "version 2"),
        (b"btsnoop\x00" + struct.pack(">II", 1, 1004), 12, "datalink 1004"),
        (b"btsnoop\x00" + struct.pack(">II", 1, 1002) + struct.pack(">IIIIq", 1, 5, 0, 0, 0) + bytes(5), 16, "exceeds"),
        (pcap(1, []), 20, "unsupported link type 1 (LINKTYPE_ETHERNET)"),
        (pcap(147, []), 20, "unsupported link type 147"),
        (struct.pack("<IHH", 0xA1B2C3D4, 3, 0) + bytes(16), 4, "pcap version 3"),
        (b"\xd4\xc3\xb2\xa1" + bytes(4), 8, "too short"),
        (pcapng_section()[:8] + b"\x00\x00\x00\x00" + pcapng_section()[12:], 8, "byte-order magic"),
        (pcapng_section() + struct.pack("<II", 6, 13) + bytes(8), None, "multiple of 4"),
        (pcapng_section() + pcapng_packet(0, T0, b"\x02"), None, "only 0 are declared"),
    ],
)
def test_bad_files_raise_capture_error_with_offset(data: bytes, offset: int | None, fragment: str) -> None:
    with pytest.raises(CaptureError) as caught:
        read_capture(data, source="bad.cap")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("bad.cap")
    if offset is not None:
        assert caught.value.offset == offset
    else:
        assert caught.value.offset is not None


def test_malformed_packets_inside_a_good_file_become_warnings() -> None:
    records = [
        (T0, RECEIVED, b"\x02\x01\x00\x50\x00" + bytes(3)),  # ACL length beyond the packet
        (T0 + 1, RECEIVED, acl(1, l2cap(b"\x1b\x01"))),  # notification without its handle
        (T0 + 2, RECEIVED, acl(1, l2cap(att_notification(1, b"ok")))),
        (T0 + 3, RECEIVED, acl(1, b"\x05\x00\x04\x00\x1b", boundary=0b01)),  # continuation without start
    ]
    timeline = read_capture(btsnoop_h4(records))
    assert [e.value for e in timeline.events] == [b"ok"]
    text = " ".join(timeline.warnings)
    assert "malformed packets" in text
    assert "malformed ATT" in text
    assert "without a start fragment" in text


def test_uuid_forms() -> None:
    assert uuid_from_bytes(b"\x01\xff") == FF01
    assert uuid_from_bytes(bytes(range(16))) == "0f0e0d0c-0b0a-0908-0706-050403020100"
    assert uuid_from_bytes(b"\x01") is None

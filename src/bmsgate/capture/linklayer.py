"""Over-the-air decoding: nRF Sniffer (LINKTYPE_NORDIC_BLE) and LINKTYPE_BLUETOOTH_LE_LL_WITH_PHDR.

Both wrap an LE link-layer packet ``access address (4) | [coding indicator (1), LE Coded PHY only] |
PDU header (2) | payload | CRC (3)`` in a sniffer header that says which way it went and whether the
CRC was right. Advertising PDUs (access address 0x8E89BED6) give device names and, in CONNECT_IND,
the access address of a new connection and the peer's address. Data PDUs carry L2CAP fragments
(LLID 0b10 start, 0b01 continuation or empty, 0b11 LL control).

The phone is the central, so master → slave is :attr:`Direction.SENT` and slave → master
:attr:`Direction.RECEIVED`. Retransmissions (same sequence number and same content again in the
same direction) and packets with a bad CRC are dropped; encrypted links are reported and skipped.
Header layouts and their sources are in docs/capture-analysis.md.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from bmsgate.capture.connections import ConnectionRegistry, advertised_name, format_address
from bmsgate.capture.l2cap import L2capPdu, L2capReassembler
from bmsgate.capture.packets import ByteReader, Direction, LinkType, Notes, RawPacket

__all__ = ["ADVERTISING_ACCESS_ADDRESS", "LinkLayerDecoder"]

ADVERTISING_ACCESS_ADDRESS: Final = 0x8E89BED6

# nRF Sniffer packet types carrying a received packet (protocol v1 uses 0x06 for all of them).
_NORDIC_ADVERTISING_PDU: Final = 0x02
_NORDIC_DATA_PDU: Final = 0x06
_NORDIC_CRC_OK: Final = 0x01
_NORDIC_MASTER_TO_SLAVE: Final = 0x02
_NORDIC_ENCRYPTED: Final = 0x04
_NORDIC_MIC_OK: Final = 0x08
_PHY_CODED: Final = 2

_PHDR_HEADER_SIZE: Final = 10
_PHDR_DECRYPTED: Final = 0x0008
_PHDR_CRC_CHECKED: Final = 0x0400
_PHDR_CRC_VALID: Final = 0x0800
_PHDR_DATA_MASTER_TO_SLAVE: Final = 2
_PHDR_DATA_SLAVE_TO_MASTER: Final = 3

_ADVERTISING_WITH_DATA: Final = frozenset({0x00, 0x02, 0x04, 0x06})  # ADV_IND, NONCONN, SCAN_RSP, SCAN_IND
_CONNECT_IND: Final = 0x05
_LLID_CONTINUATION: Final = 0b01
_LLID_START: Final = 0b10
_LLID_CONTROL: Final = 0b11
_LL_TERMINATE_IND: Final = 0x02
_LL_ENC_REQ: Final = 0x03
_MIC_SIZE: Final = 4


@dataclasses.dataclass(frozen=True, slots=True)
class _Radio:
    """What the sniffer header says about one packet."""

    direction: Direction
    crc_bad: bool
    encrypted: bool
    decrypted: bool
    coded_phy: bool


class LinkLayerDecoder:
    """Feeds on sniffer packets and produces L2CAP PDUs per access address and direction."""

    def __init__(self, registry: ConnectionRegistry, notes: Notes) -> None:
        self._registry = registry
        self._notes = notes
        self._reassembler = L2capReassembler()
        self._last_sequence: dict[tuple[str, Direction], tuple[int, bytes]] = {}

    def feed(self, packet: RawPacket) -> list[L2capPdu]:
        """Decode one packet; returns the L2CAP PDUs it completes.

        Raises:
            MalformedPacket: the packet is shorter than its headers say.
        """
        reader = ByteReader(packet.data)
        unwrapped = self._nordic(reader) if packet.link_type == LinkType.NORDIC_BLE else self._phdr(reader)
        if unwrapped is None:
            return []
        radio, reader = unwrapped
        if radio.crc_bad:
            self._notes.add("skipped link-layer packets with a bad CRC", packet.offset)
            return []
        access_address = reader.u32()
        if radio.coded_phy:
            reader.skip(1)
        if access_address == ADVERTISING_ACCESS_ADDRESS:
            self._advertising(reader, packet.timestamp)
            return []
        return self._data(reader, access_address, radio, packet)

    # -- sniffer headers ---------------------------------------------------------------------------

    def _nordic(self, reader: ByteReader) -> tuple[_Radio, ByteReader] | None:
        reader.skip(1)  # board id
        header = ByteReader(reader.take(6))
        first, second, version = header.u8(), header.u8(), header.u8()
        header.skip(2)  # packet counter
        packet_type = header.u8()
        payload_length = second if version == 1 else first | second << 8
        if packet_type not in (_NORDIC_ADVERTISING_PDU, _NORDIC_DATA_PDU):
            return None
        payload = ByteReader(reader.take(min(payload_length, reader.remaining)))
        sniffer_header_length = payload.u8()
        flags = payload.u8()
        payload.skip(sniffer_header_length - 2)  # channel, RSSI, event counter, timestamp
        encrypted = bool(flags & _NORDIC_ENCRYPTED)
        radio = _Radio(
            direction=Direction.SENT if flags & _NORDIC_MASTER_TO_SLAVE else Direction.RECEIVED,
            crc_bad=not flags & _NORDIC_CRC_OK,
            encrypted=encrypted,
            decrypted=encrypted and bool(flags & _NORDIC_MIC_OK),
            coded_phy=(flags >> 4) & 0b111 == _PHY_CODED,
        )
        return radio, payload

    def _phdr(self, reader: ByteReader) -> tuple[_Radio, ByteReader]:
        header = ByteReader(reader.take(_PHDR_HEADER_SIZE))
        header.skip(8)  # channel, signal, noise, access-address offenses, reference access address
        flags = header.u16()
        pdu_type = (flags >> 7) & 0b111
        if pdu_type == _PHDR_DATA_MASTER_TO_SLAVE:
            direction = Direction.SENT
        elif pdu_type == _PHDR_DATA_SLAVE_TO_MASTER:
            direction = Direction.RECEIVED
        else:
            direction = Direction.UNKNOWN
        radio = _Radio(
            direction=direction,
            crc_bad=bool(flags & _PHDR_CRC_CHECKED) and not flags & _PHDR_CRC_VALID,
            encrypted=False,
            decrypted=bool(flags & _PHDR_DECRYPTED),
            coded_phy=(flags >> 14) == _PHY_CODED,
        )
        return radio, reader

    # -- link layer --------------------------------------------------------------------------------

    def _advertising(self, reader: ByteReader, timestamp: float) -> None:
        first = reader.u8()
        pdu = ByteReader(reader.take(reader.u8()))
        pdu_type = first & 0x0F
        if pdu_type in _ADVERTISING_WITH_DATA:
            address = format_address(pdu.take(6))
            name = advertised_name(pdu.rest())
            if name:
                self._registry.remember_name(address, name)
        elif pdu_type == _CONNECT_IND:
            pdu.skip(6)  # initiator (the phone)
            advertiser = format_address(pdu.take(6))
            access_address = pdu.u32()
            self._registry.open(
                "ll",
                access_address,
                peer_address=advertiser,
                peer_address_random=bool(first & 0x80),  # RxAdd describes AdvA
                started=timestamp,
            )

    def _data(self, reader: ByteReader, access_address: int, radio: _Radio, packet: RawPacket) -> list[L2capPdu]:
        first = reader.u8()
        length = reader.u8()
        if first & 0x20:
            reader.skip(1)  # CTEInfo, present when the CP bit is set
        payload = reader.take(length)
        connection = self._registry.current("ll", access_address)
        if radio.encrypted or self._registry.get(connection).encrypted:
            if not radio.decrypted:
                self._registry.update(connection, encrypted=True)
                self._notes.add("skipped encrypted link-layer packets (the link is encrypted)", packet.offset)
                return []
            payload = payload[:-_MIC_SIZE] if len(payload) >= _MIC_SIZE else payload
        stream = (connection, radio.direction)
        sequence = (first >> 3) & 1
        if self._last_sequence.get(stream) == (sequence, bytes((first & 0x13,)) + payload):
            self._notes.add("skipped link-layer retransmissions", packet.offset)
            return []
        self._last_sequence[stream] = (sequence, bytes((first & 0x13,)) + payload)
        llid = first & 0b11
        if llid == _LLID_CONTROL:
            self._control(connection, access_address, payload, packet.timestamp)
            return []
        if not payload:
            return []  # empty PDU: only acknowledges
        if llid == _LLID_START:
            result, problem = self._reassembler.start(stream, payload)
        elif llid == _LLID_CONTINUATION:
            result, problem = self._reassembler.continue_(stream, payload)
        else:
            return []
        if problem:
            self._notes.add(problem, packet.offset)
        if result is None:
            return []
        channel, body = result
        return [L2capPdu(packet.timestamp, connection, radio.direction, channel, body, packet.offset)]

    def _control(self, connection: str, access_address: int, payload: bytes, timestamp: float) -> None:
        if not payload:
            return
        if payload[0] == _LL_TERMINATE_IND:
            self._registry.close("ll", access_address, timestamp)
        elif payload[0] == _LL_ENC_REQ:
            self._registry.update(connection, encrypted=True)

    def incomplete(self) -> int:
        """L2CAP PDUs still missing fragments when the capture ended."""
        return self._reassembler.incomplete()

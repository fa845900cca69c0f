"""HCI decoding: H4 packets → connection events and reassembled L2CAP PDUs.

- H4 packet indicator: 0x01 command, 0x02 ACL data, 0x03 SCO, 0x04 event, 0x05 ISO.
- ACL header: ``handle (12 bits) | PB flag (2 bits) | BC flag (2 bits)`` as u16 LE, then data length
  (u16 LE). PB 0b00/0b10 (and the legacy 0b11) start an L2CAP PDU, 0b01 continues one.
- Events used: Disconnection Complete (0x05); LE Meta (0x3E) with LE Connection Complete (0x01),
  LE Enhanced Connection Complete v1/v2 (0x0A/0x29), which name the peer address per handle, and LE
  Advertising Report (0x02), which gives advertised names.
"""

from __future__ import annotations

from typing import Final

from bmsgate.capture.connections import ConnectionRegistry, advertised_name, format_address
from bmsgate.capture.l2cap import L2capPdu, L2capReassembler
from bmsgate.capture.packets import ByteReader, Direction, LinkType, MalformedPacket, Notes, RawPacket

__all__ = ["HciDecoder"]

_COMMAND: Final = 0x01
_ACL: Final = 0x02
_EVENT: Final = 0x04
_DISCONNECTION_COMPLETE: Final = 0x05
_LE_META: Final = 0x3E
_LE_CONNECTION_COMPLETE: Final = 0x01
_LE_ADVERTISING_REPORT: Final = 0x02
_LE_ENHANCED_CONNECTION_COMPLETE: Final = frozenset({0x0A, 0x29})
_PB_CONTINUATION: Final = 0b01


class HciDecoder:
    """Feeds on HCI packets (H4, H4 with direction header, or btsnoop un-encapsulated)."""

    def __init__(self, registry: ConnectionRegistry, notes: Notes) -> None:
        self._registry = registry
        self._notes = notes
        self._reassembler = L2capReassembler()

    def feed(self, packet: RawPacket) -> list[L2capPdu]:
        """Decode one packet; returns the L2CAP PDUs it completes.

        Raises:
            MalformedPacket: the packet is shorter than its headers say.
        """
        reader = ByteReader(packet.data)
        direction = packet.direction
        if packet.link_type == LinkType.BLUETOOTH_HCI_H4_WITH_PHDR:
            # Big-endian u32; bit 0 set = received. This is what libpcap, Wireshark and
            # libimobiledevice write (the IETF draft's prose says the opposite; see the docs).
            flags = int.from_bytes(reader.take(4), "big")
            direction = Direction.RECEIVED if flags & 1 else Direction.SENT
        if packet.link_type == LinkType.BTSNOOP_HCI_UNENCAPSULATED:
            if packet.is_command_or_event:
                packet_type = _EVENT if direction == Direction.RECEIVED else _COMMAND
            else:
                packet_type = _ACL
        else:
            packet_type = reader.u8()
        if packet_type == _EVENT:
            self._event(reader, packet.timestamp)
            return []
        if packet_type == _ACL:
            return self._acl(reader, packet, direction)
        return []

    def _event(self, reader: ByteReader, timestamp: float) -> None:
        code = reader.u8()
        parameters = ByteReader(reader.take(reader.u8()))
        if code == _DISCONNECTION_COMPLETE:
            status = parameters.u8()
            handle = parameters.u16() & 0x0FFF
            if status == 0:
                self._registry.close("hci", handle, timestamp)
        elif code == _LE_META:
            subevent = parameters.u8()
            if subevent == _LE_CONNECTION_COMPLETE or subevent in _LE_ENHANCED_CONNECTION_COMPLETE:
                self._connection_complete(parameters, timestamp)
            elif subevent == _LE_ADVERTISING_REPORT:
                self._advertising_report(parameters)

    def _connection_complete(self, parameters: ByteReader, timestamp: float) -> None:
        status = parameters.u8()
        handle = parameters.u16() & 0x0FFF
        _role = parameters.u8()
        address_type = parameters.u8()
        address = format_address(parameters.take(6))
        if status != 0:
            return
        self._registry.open(
            "hci",
            handle,
            peer_address=address,
            # Types 0x01 and 0x03 are random (static or resolved private) addresses.
            peer_address_random=bool(address_type & 0x01),
            started=timestamp,
        )

    def _advertising_report(self, parameters: ByteReader) -> None:
        # Reports are laid out one after another; multi-report events are rare in snoop logs.
        for _ in range(parameters.u8()):
            _event_type = parameters.u8()
            _address_type = parameters.u8()
            address = format_address(parameters.take(6))
            name = advertised_name(parameters.take(parameters.u8()))
            parameters.skip(1)  # RSSI
            if name:
                self._registry.remember_name(address, name)

    def _acl(self, reader: ByteReader, packet: RawPacket, direction: Direction) -> list[L2capPdu]:
        header = reader.u16()
        length = reader.u16()
        if length > reader.remaining:
            if packet.truncated:
                self._notes.add("skipped ACL packets cut short by the capture's snapshot length", packet.offset)
                return []
            raise MalformedPacket(f"ACL length {length} exceeds the {reader.remaining} bytes present")
        fragment = reader.take(length)
        handle = header & 0x0FFF
        boundary = (header >> 12) & 0b11
        connection = self._registry.current("hci", handle)
        stream = (connection, direction)
        if boundary == _PB_CONTINUATION:
            result, problem = self._reassembler.continue_(stream, fragment)
        else:
            result, problem = self._reassembler.start(stream, fragment)
        if problem:
            self._notes.add(problem, packet.offset)
        if result is None:
            return []
        channel, payload = result
        return [L2capPdu(packet.timestamp, connection, direction, channel, payload, packet.offset)]

    def incomplete(self) -> int:
        """L2CAP PDUs still missing fragments when the capture ended."""
        return self._reassembler.incomplete()

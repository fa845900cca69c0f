"""From capture bytes to an ATT timeline: the one entry point of the readers.

:func:`read_capture` recognises the container (btsnoop, pcap, pcapng) by its magic, runs the HCI or
link-layer decoder for each packet, reassembles L2CAP, decodes ATT and resolves handle UUIDs once the
whole capture (including any GATT discovery) has been seen. Damage inside single packets is counted in
`warnings`; only an unreadable container raises.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from bmsgate.capture.att import AttDecoder, AttEvent, Characteristic
from bmsgate.capture.btsnoop import BTSNOOP_MAGIC, read_btsnoop
from bmsgate.capture.connections import Connection, ConnectionRegistry
from bmsgate.capture.hci import HciDecoder
from bmsgate.capture.l2cap import ATT_CHANNEL, L2capPdu
from bmsgate.capture.linklayer import LinkLayerDecoder
from bmsgate.capture.packets import CaptureBytes, CaptureFile, LinkType, MalformedPacket, Notes, Progress
from bmsgate.capture.pcap import PCAP_MAGICS, read_pcap
from bmsgate.capture.pcapng import PCAPNG_MAGIC, read_pcapng
from bmsgate.errors import CaptureError

__all__ = ["CaptureTimeline", "read_capture", "read_capture_file"]

_HCI_LINK_TYPES: Final = frozenset(
    {LinkType.BLUETOOTH_HCI_H4, LinkType.BLUETOOTH_HCI_H4_WITH_PHDR, LinkType.BTSNOOP_HCI_UNENCAPSULATED}
)


@dataclasses.dataclass(frozen=True, slots=True)
class CaptureTimeline:
    """Everything the readers learnt from one capture.

    Attributes:
        source: where the bytes came from (file name), for messages.
        format: ``btsnoop``, ``pcap`` or ``pcapng``.
        link_types: names of the link types seen.
        packet_count: link-layer packets in the file.
        connections: in order of first appearance.
        characteristics: handles with UUIDs learnt from GATT discovery.
        events: ATT writes, notifications, indications and reads, in capture order.
        warnings: what could not be read (truncation, malformed packets, encrypted links).
    """

    source: str
    format: str
    link_types: tuple[str, ...]
    packet_count: int
    connections: tuple[Connection, ...]
    characteristics: tuple[Characteristic, ...]
    events: tuple[AttEvent, ...]
    warnings: tuple[str, ...] = ()

    @property
    def start(self) -> float:
        """Time of the first event (0.0 without events); report times are relative to it."""
        return self.events[0].timestamp if self.events else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form (times relative to :attr:`start`)."""
        return {
            "source": self.source,
            "format": self.format,
            "link_types": list(self.link_types),
            "packet_count": self.packet_count,
            "connections": [connection.to_dict() for connection in self.connections],
            "characteristics": [characteristic.to_dict() for characteristic in self.characteristics],
            "timeline": [event.to_dict(self.start) for event in self.events],
            "warnings": list(self.warnings),
        }


def read_capture_file(data: CaptureBytes, *, source: str = "<capture>") -> CaptureFile:
    """Split a capture of any supported container format into link-layer packets.

    Raises:
        CaptureError: the format is not recognised or the container is damaged.
    """
    if data[: len(BTSNOOP_MAGIC)] == BTSNOOP_MAGIC:
        return read_btsnoop(data, source=source)
    if data[: len(PCAPNG_MAGIC)] == PCAPNG_MAGIC:
        return read_pcapng(data, source=source)
    if data[:4] in PCAP_MAGICS:
        return read_pcap(data, source=source)
    if not data:
        raise CaptureError("the file is empty", source=source, offset=0)
    raise CaptureError(f"not a btsnoop, pcap or pcapng file (starts with {data[:8].hex()})", source=source, offset=0)


def read_capture(data: CaptureBytes, *, source: str = "<capture>", progress: Progress | None = None) -> CaptureTimeline:
    """Decode a capture into its ATT timeline; `progress` hears ("reading", byte offset, file size).

    Raises:
        CaptureError: the container is unreadable (bad magic, unsupported link type, damaged headers).
    """
    capture = read_capture_file(data, source=source)
    notes = Notes(source)
    registry = ConnectionRegistry()
    hci = HciDecoder(registry, notes)
    link_layer = LinkLayerDecoder(registry, notes)
    att = AttDecoder()
    events: list[AttEvent] = []
    link_types: dict[str, None] = {}
    for count, packet in enumerate(capture.packets):
        if progress is not None and count % 5000 == 0:
            progress("reading", packet.offset, len(data))
        link_types[_link_type_name(packet.link_type)] = None
        decoder = hci if packet.link_type in _HCI_LINK_TYPES else link_layer
        try:
            for pdu in decoder.feed(packet):
                events.extend(_att_events(att, pdu, notes))
        except MalformedPacket:
            notes.add(
                "skipped packets cut short by the capture" if packet.truncated else "skipped malformed packets",
                packet.offset,
            )

    warnings = list(capture.warnings) + notes.warnings()
    incomplete = hci.incomplete() + link_layer.incomplete()
    if incomplete:
        warnings.append(f"{source}: {incomplete} L2CAP PDUs were still incomplete when the capture ended")
    connections = registry.connections()
    warnings.extend(
        f"{source}: connection {connection.id} is encrypted; its data after encryption started is not readable"
        for connection in connections
        if connection.encrypted
    )
    resolved = tuple(dataclasses.replace(event, uuid=att.uuid_for(event.connection, event.handle)) for event in events)
    return CaptureTimeline(
        source=source,
        format=capture.format,
        link_types=tuple(link_types),
        packet_count=len(capture.packets),
        connections=connections,
        characteristics=att.characteristics(),
        events=resolved,
        warnings=tuple(warnings),
    )


def _att_events(att: AttDecoder, pdu: L2capPdu, notes: Notes) -> list[AttEvent]:
    if pdu.channel != ATT_CHANNEL:
        return []
    try:
        return att.feed(pdu)
    except MalformedPacket:
        notes.add("skipped malformed ATT PDUs", pdu.offset)
        return []


def _link_type_name(link_type: int) -> str:
    return LinkType(link_type).name

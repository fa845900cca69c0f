"""ATT decoding: writes, notifications and indications, plus the GATT discovery that names handles.

Value-carrying PDUs become :class:`AttEvent` records: Write Request (0x12), Write Command (0x52),
Prepare/Execute Write (0x16/0x18, joined into one write), Handle Value Notification (0x1B),
Indication (0x1D), Multiple Handle Value Notification (0x23) and Read Response (0x0B, paired with its
Read Request). Discovery responses map handles to UUIDs: Read By Group Type (0x11: services), Read By
Type for characteristic declarations (0x09: properties, value handle, UUID) and Find Information
(0x05: attribute types, e.g. 0x2902 for a CCCD).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final

from bmsgate.capture.l2cap import L2capPdu
from bmsgate.capture.packets import ByteReader, Direction

__all__ = ["CCCD_UUID", "AttDecoder", "AttEvent", "AttKind", "Characteristic", "uuid_from_bytes"]

_BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
CCCD_UUID: Final = "00002902" + _BASE_UUID_SUFFIX

_ERROR_RESPONSE: Final = 0x01
_FIND_INFORMATION_REQUEST: Final = 0x04
_FIND_INFORMATION_RESPONSE: Final = 0x05
_READ_BY_TYPE_REQUEST: Final = 0x08
_READ_BY_TYPE_RESPONSE: Final = 0x09
_READ_REQUEST: Final = 0x0A
_READ_RESPONSE: Final = 0x0B
_READ_BY_GROUP_TYPE_REQUEST: Final = 0x10
_READ_BY_GROUP_TYPE_RESPONSE: Final = 0x11
_WRITE_REQUEST: Final = 0x12
_PREPARE_WRITE_REQUEST: Final = 0x16
_EXECUTE_WRITE_REQUEST: Final = 0x18
_NOTIFICATION: Final = 0x1B
_INDICATION: Final = 0x1D
_MULTIPLE_NOTIFICATION: Final = 0x23
_WRITE_COMMAND: Final = 0x52

_CHARACTERISTIC_DECLARATION: Final = "00002803" + _BASE_UUID_SUFFIX
_SERVICE_DECLARATIONS: Final = frozenset({"00002800" + _BASE_UUID_SUFFIX, "00002801" + _BASE_UUID_SUFFIX})
_DECLARATION_ENTRY_SIZES: Final = frozenset({7, 21})  # handle + properties + value handle + 16/128-bit UUID

_PROPERTY_NAMES: Final = (
    "broadcast",
    "read",
    "write_without_response",
    "write",
    "notify",
    "indicate",
    "authenticated_signed_writes",
    "extended_properties",
)


def uuid_from_bytes(raw: bytes) -> str | None:
    """The full lowercase 128-bit UUID string for a 16-, 32- or 128-bit UUID sent little-endian."""
    if len(raw) in (2, 4):
        return f"{int.from_bytes(raw, 'little'):08x}{_BASE_UUID_SUFFIX}"
    if len(raw) == 16:
        text = raw[::-1].hex()
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    return None


class AttKind(enum.StrEnum):
    """What an ATT event did."""

    WRITE = "write"
    WRITE_CMD = "write_cmd"
    NOTIFY = "notify"
    INDICATE = "indicate"
    READ = "read"

    @property
    def is_write(self) -> bool:
        """Host → BMS data."""
        return self in (AttKind.WRITE, AttKind.WRITE_CMD)

    @property
    def is_notification(self) -> bool:
        """BMS → host data pushed by the BMS."""
        return self in (AttKind.NOTIFY, AttKind.INDICATE)


@dataclasses.dataclass(frozen=True, slots=True)
class AttEvent:
    """One value that travelled over ATT.

    Attributes:
        timestamp: seconds since the Unix epoch (as the capture recorded it).
        connection: the connection id.
        direction: ``tx`` (phone → BMS) or ``rx``.
        kind: write, write_cmd, notify, indicate or read.
        handle: the attribute handle.
        uuid: the characteristic UUID, when the capture includes the GATT discovery.
        value: the bytes.
    """

    timestamp: float
    connection: str
    direction: Direction
    kind: AttKind
    handle: int
    uuid: str | None
    value: bytes

    def to_dict(self, start: float = 0.0) -> dict[str, Any]:
        """JSON form; ``t`` is relative to `start`."""
        return {
            "t": round(self.timestamp - start, 6),
            "connection": self.connection,
            "dir": self.direction.value,
            "kind": self.kind.value,
            "handle": self.handle,
            "uuid": self.uuid,
            "data": self.value.hex(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Characteristic:
    """A characteristic learnt from GATT discovery (or a bare attribute type from Find Information).

    Attributes:
        connection: the connection id.
        handle: the value handle.
        uuid: the characteristic (or attribute type) UUID.
        properties: the declaration's property bits, when the declaration was seen.
        service: UUID of the service whose handle range contains `handle`, when seen.
    """

    connection: str
    handle: int
    uuid: str
    properties: int | None = None
    service: str | None = None

    @property
    def property_names(self) -> tuple[str, ...]:
        """The property bits by name (``notify``, ``write_without_response``, ...)."""
        if self.properties is None:
            return ()
        return tuple(name for bit, name in enumerate(_PROPERTY_NAMES) if self.properties >> bit & 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "connection": self.connection,
            "handle": self.handle,
            "uuid": self.uuid,
            "service": self.service,
            "properties": list(self.property_names) if self.properties is not None else None,
        }


@dataclasses.dataclass(slots=True)
class _Session:
    pending_request: tuple[int, bytes] | None = None
    prepared: list[tuple[int, int, bytes]] = dataclasses.field(default_factory=list)
    declarations: dict[int, tuple[str, int]] = dataclasses.field(default_factory=dict)
    attribute_types: dict[int, str] = dataclasses.field(default_factory=dict)
    services: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)


class AttDecoder:
    """Decodes ATT PDUs of all connections; knows the GATT map learnt so far."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def feed(self, pdu: L2capPdu) -> list[AttEvent]:
        """Decode one ATT PDU; returns the value events it carries (UUIDs not yet resolved).

        Raises:
            MalformedPacket: the PDU is shorter than its opcode requires.
        """
        session = self._sessions.setdefault(pdu.connection, _Session())
        reader = ByteReader(pdu.payload)
        opcode = reader.u8()

        def event(kind: AttKind, handle: int, value: bytes) -> AttEvent:
            direction = pdu.direction
            if direction == Direction.UNKNOWN:
                # Without a direction from the capture, ATT roles decide: the phone is the GATT client.
                direction = Direction.SENT if kind.is_write else Direction.RECEIVED
            return AttEvent(pdu.timestamp, pdu.connection, direction, kind, handle, None, value)

        if opcode in (_WRITE_REQUEST, _WRITE_COMMAND):
            handle = reader.u16()
            return [event(AttKind.WRITE if opcode == _WRITE_REQUEST else AttKind.WRITE_CMD, handle, reader.rest())]
        if opcode in (_NOTIFICATION, _INDICATION):
            handle = reader.u16()
            return [event(AttKind.NOTIFY if opcode == _NOTIFICATION else AttKind.INDICATE, handle, reader.rest())]
        if opcode == _MULTIPLE_NOTIFICATION:
            events = []
            while reader.remaining:
                handle = reader.u16()
                events.append(event(AttKind.NOTIFY, handle, reader.take(reader.u16())))
            return events
        if opcode == _PREPARE_WRITE_REQUEST:
            handle, offset = reader.u16(), reader.u16()
            session.prepared.append((handle, offset, reader.rest()))
            return []
        if opcode == _EXECUTE_WRITE_REQUEST:
            return [event(AttKind.WRITE, handle, value) for handle, value in _execute(session, reader.u8())]
        if opcode in (_FIND_INFORMATION_REQUEST, _READ_BY_TYPE_REQUEST, _READ_REQUEST, _READ_BY_GROUP_TYPE_REQUEST):
            session.pending_request = (opcode, reader.rest())
            return []
        request = session.pending_request
        if opcode == _ERROR_RESPONSE or (request is not None and opcode == request[0] + 1):
            session.pending_request = None
        if opcode == _READ_RESPONSE and request is not None and request[0] == _READ_REQUEST:
            handle = ByteReader(request[1]).u16()
            return [event(AttKind.READ, handle, reader.rest())]
        if opcode == _FIND_INFORMATION_RESPONSE:
            _find_information(session, reader)
        elif opcode == _READ_BY_TYPE_RESPONSE:
            _read_by_type(session, reader, request)
        elif opcode == _READ_BY_GROUP_TYPE_RESPONSE:
            _read_by_group_type(session, reader, request)
        return []

    def uuid_for(self, connection: str, handle: int) -> str | None:
        """The UUID of a handle on a connection, if discovery revealed it."""
        session = self._sessions.get(connection)
        if session is None:
            return None
        declaration = session.declarations.get(handle)
        if declaration is not None:
            return declaration[0]
        return session.attribute_types.get(handle)

    def characteristics(self) -> tuple[Characteristic, ...]:
        """Every characteristic (and typed attribute) discovered, per connection in handle order."""
        found = []
        for connection, session in self._sessions.items():
            handles = sorted(set(session.declarations) | set(session.attribute_types))
            for handle in handles:
                declared = session.declarations.get(handle)
                uuid = declared[0] if declared else session.attribute_types[handle]
                if declared is None and (uuid in _SERVICE_DECLARATIONS or uuid == _CHARACTERISTIC_DECLARATION):
                    continue  # declarations themselves are structure, not data
                service = next((service for start, end, service in session.services if start <= handle <= end), None)
                properties = declared[1] if declared else None
                found.append(Characteristic(connection, handle, uuid, properties, service))
        return tuple(found)


def _execute(session: _Session, flags: int) -> list[tuple[int, bytes]]:
    prepared, session.prepared = session.prepared, []
    if flags != 0x01:
        return []  # 0x00 cancels the queued writes
    values: dict[int, bytearray] = {}
    for handle, offset, part in prepared:
        value = values.setdefault(handle, bytearray())
        if offset > len(value):
            value.extend(bytes(offset - len(value)))
        value[offset : offset + len(part)] = part
    return [(handle, bytes(value)) for handle, value in values.items()]


def _find_information(session: _Session, reader: ByteReader) -> None:
    uuid_size = {1: 2, 2: 16}.get(reader.u8())
    if uuid_size is None:
        return
    while reader.remaining >= 2 + uuid_size:
        handle = reader.u16()
        uuid = uuid_from_bytes(reader.take(uuid_size))
        if uuid is not None:
            session.attribute_types[handle] = uuid


def _requested_type(request: tuple[int, bytes] | None, opcode: int) -> str | None:
    if request is None or request[0] != opcode or len(request[1]) < 6:
        return None
    return uuid_from_bytes(request[1][4:])


def _read_by_type(session: _Session, reader: ByteReader, request: tuple[int, bytes] | None) -> None:
    entry_size = reader.u8()
    requested = _requested_type(request, _READ_BY_TYPE_REQUEST)
    declarations = requested == _CHARACTERISTIC_DECLARATION or (
        requested is None and entry_size in _DECLARATION_ENTRY_SIZES
    )
    if not declarations or entry_size not in _DECLARATION_ENTRY_SIZES:
        return
    while reader.remaining >= entry_size:
        entry = ByteReader(reader.take(entry_size))
        _declaration_handle = entry.u16()
        properties = entry.u8()
        value_handle = entry.u16()
        uuid = uuid_from_bytes(entry.rest())
        if uuid is not None:
            session.declarations[value_handle] = (uuid, properties)


def _read_by_group_type(session: _Session, reader: ByteReader, request: tuple[int, bytes] | None) -> None:
    entry_size = reader.u8()
    requested = _requested_type(request, _READ_BY_GROUP_TYPE_REQUEST)
    if (requested is not None and requested not in _SERVICE_DECLARATIONS) or entry_size not in (6, 20):
        return
    while reader.remaining >= entry_size:
        entry = ByteReader(reader.take(entry_size))
        start, end = entry.u16(), entry.u16()
        uuid = uuid_from_bytes(entry.rest())
        if uuid is not None:
            session.services.append((start, end, uuid))

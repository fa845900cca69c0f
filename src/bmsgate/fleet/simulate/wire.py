"""Raw MQTT 3.1.1 over an asyncio socket: the few packets a simulated gateway sends, and the acks it reads.

A simulated gateway must cost the load generator far less than the broker and ingest it loads (tens of
thousands of connections from one process on a shared 2-core machine), so it does not go through paho: it
writes the packets itself (CONNECT with credentials and a retained QoS 1 last will, QoS 1 PUBLISH,
DISCONNECT) and reads only CONNACK, PUBACK and PINGRESP. The broker sees exactly what a real gateway sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bmsgate.errors import BmsgateError

__all__ = [
    "DISCONNECT",
    "ConnectOptions",
    "RawGatewayConnection",
    "SimulationError",
    "connect_packet",
    "mqtt_packet",
    "mqtt_string",
    "publish_packet",
]

DISCONNECT: Final = b"\xe0\x00"
"""A clean DISCONNECT: the broker discards the last will."""
PINGREQ: Final = b"\xc0\x00"

_CONNACK: Final = 0x20
_PUBACK: Final = 0x40
_PINGRESP: Final = 0xD0
_MAX_INBOUND: Final = 64 * 1024
"""A gateway reads only tiny acks; a peer sending more than this unread is not a broker we understand."""


class SimulationError(BmsgateError):
    """The simulator could not connect or the broker answered something it does not accept."""


def mqtt_string(data: bytes) -> bytes:
    """An MQTT length-prefixed string."""
    return len(data).to_bytes(2, "big") + data


def mqtt_packet(first: int, body: bytes) -> bytes:
    """A packet: the fixed header byte, the variable-length "remaining length", the body."""
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first, *encoded]) + body


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """What one CONNECT says: client id, credentials, keepalive and the (retained, QoS 1) last will."""

    client_id: str
    will_topic: str
    will_payload: bytes
    keepalive_s: int = 60
    username: str | None = None
    password: str | None = None


def connect_packet(options: ConnectOptions) -> bytes:
    """CONNECT (3.1.1, clean session) with a retained QoS 1 will and optional username/password."""
    flags = 0b0010_1110  # will retain, will QoS 1, will flag, clean session
    payload = (
        mqtt_string(options.client_id.encode())
        + mqtt_string(options.will_topic.encode())
        + mqtt_string(options.will_payload)
    )
    if options.username is not None:
        flags |= 0x80
        payload += mqtt_string(options.username.encode())
        if options.password is not None:
            flags |= 0x40
            payload += mqtt_string(options.password.encode())
    body = mqtt_string(b"MQTT") + bytes([4, flags]) + options.keepalive_s.to_bytes(2, "big") + payload
    return mqtt_packet(0x10, body)


def publish_packet(topic_name: bytes, packet_id: int, payload: bytes, *, retain: bool = False) -> bytes:
    """A QoS 1 PUBLISH (``topic_name`` already UTF-8)."""
    return mqtt_packet(0x33 if retain else 0x32, mqtt_string(topic_name) + packet_id.to_bytes(2, "big") + payload)


class RawGatewayConnection(asyncio.Protocol):
    """One TCP connection of a simulated gateway; counts what the broker acknowledged.

    ``in_flight`` is how many QoS 1 PUBLISHes wait for their PUBACK: when the connection is cut they are
    "unconfirmed" (the broker may or may not have them), which is all a 3.1.1 client can know about loss.
    """

    def __init__(self, options: ConnectOptions, on_lost: Callable[[RawGatewayConnection], None]) -> None:
        """Prepare a connection that sends ``options``' CONNECT as soon as the socket is up."""
        self.options = options
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A connect given up on (cancelled mid-handshake at the end of a run, thousands at 50,000 gateways)
        # still fails this future later: seen here, or asyncio logs each as "never retrieved".
        self.connected.add_done_callback(_seen)
        self.closed = False
        self.in_flight = 0
        self.acked = 0
        self._next_id = 0
        self._inbound = bytearray()
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT."""
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - create_connection gives one
            raise SimulationError("not a stream transport")
        self.transport = transport
        transport.write(connect_packet(self.options))

    def data_received(self, data: bytes) -> None:
        """Read CONNACK, PUBACK and PINGRESP; anything else from the broker is ignored by its length."""
        self._inbound += data
        if len(self._inbound) > _MAX_INBOUND:
            self._inbound.clear()
            self.abort()
            return
        while len(self._inbound) >= 2:
            length, shift, position = 0, 0, 1
            while True:
                if position >= len(self._inbound) or position > 4:
                    if position > 4:  # a remaining length of more than 4 bytes: not MQTT
                        self._inbound.clear()
                        self.abort()
                    return
                byte = self._inbound[position]
                length |= (byte & 0x7F) << shift
                shift += 7
                position += 1
                if not byte & 0x80:
                    break
            if len(self._inbound) < position + length:
                return
            kind = self._inbound[0] & 0xF0
            body = bytes(self._inbound[position : position + length])
            del self._inbound[: position + length]
            if kind == _CONNACK and not self.connected.done():
                if len(body) != 2 or body[1] != 0:
                    code = body[1] if len(body) == 2 else -1
                    self.connected.set_exception(SimulationError(f"{self.options.client_id}: CONNACK code {code}"))
                else:
                    self.connected.set_result(None)
            elif kind == _PUBACK and self.in_flight:
                self.in_flight -= 1
                self.acked += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        """Fail a pending connect; tell the owner."""
        self.closed = True
        if not self.connected.done():
            reason = f"{self.options.client_id}: connection closed before CONNACK"
            self.connected.set_exception(SimulationError(f"{reason} ({exc})" if exc else reason))
        self._on_lost(self)

    def publish(self, topic_name: bytes, payload: bytes, *, retain: bool = False) -> int:
        """Send one QoS 1 PUBLISH; returns the bytes written (0 on a closed connection)."""
        if self.transport is None or self.closed:
            return 0
        self._next_id = self._next_id % 65535 + 1
        self.in_flight += 1
        packet = publish_packet(topic_name, self._next_id, payload, retain=retain)
        self.transport.write(packet)
        return len(packet)

    def ping(self) -> None:
        """PINGREQ: keeps the connection alive when the publish interval is longer than the keepalive."""
        if self.transport is not None and not self.closed:
            self.transport.write(PINGREQ)

    def disconnect(self) -> None:
        """A clean DISCONNECT then close: no last will."""
        if self.transport is not None and not self.closed:
            self.transport.write(DISCONNECT)
            self.transport.close()

    def abort(self) -> None:
        """Cut the socket without DISCONNECT: the broker publishes the last will."""
        if self.transport is not None and not self.closed:
            self.transport.abort()


def _seen(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()

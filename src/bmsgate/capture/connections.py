"""Connections seen in a capture and what is known about the peer of each.

HCI captures identify a connection by its handle (which the controller may reuse after a
disconnection, so a reused handle becomes a new connection id with a ``#2`` suffix); over-the-air
captures by the access address from CONNECT_IND. Advertising data seen before adds the peer's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Connection", "ConnectionRegistry", "advertised_name", "format_address"]


def format_address(little_endian: bytes) -> str:
    """A Bluetooth device address as ``AA:BB:CC:DD:EE:FF`` (it travels least significant byte first)."""
    return ":".join(f"{byte:02X}" for byte in reversed(little_endian))


def advertised_name(advertising_data: bytes) -> str | None:
    """The complete (or else shortened) local name from advertising data, if present.

    Advertising data is a sequence of ``length | type | data[length - 1]`` structures; types 0x09 and
    0x08 are the complete and shortened local name. A malformed tail is ignored.
    """
    shortened = None
    position = 0
    while position < len(advertising_data):
        length = advertising_data[position]
        if length == 0 or position + 1 + length > len(advertising_data):
            break
        ad_type = advertising_data[position + 1]
        value = advertising_data[position + 2 : position + 1 + length]
        if ad_type == 0x09:
            return value.decode("utf-8", errors="replace")
        if ad_type == 0x08:
            shortened = value.decode("utf-8", errors="replace")
        position += 1 + length
    return shortened


@dataclasses.dataclass(frozen=True, slots=True)
class Connection:
    """One link between the phone (central) and a peripheral (the BMS).

    Attributes:
        id: stable id used throughout the report (``hci:0x0040``, ``ll:0x50654d1a``).
        handle: HCI connection handle, for HCI captures.
        access_address: link-layer access address, for over-the-air captures.
        peer_address: the peripheral's address, when the capture shows the connection being set up.
        peer_address_random: the peer address is a random (not public) address.
        peer_name: the peripheral's advertised name, when the capture includes its advertising.
        started / ended: capture times of the set-up and tear-down, when seen.
        encrypted: the link switched to encryption; its data after that point cannot be read.
    """

    id: str
    handle: int | None = None
    access_address: int | None = None
    peer_address: str | None = None
    peer_address_random: bool | None = None
    peer_name: str | None = None
    started: float | None = None
    ended: float | None = None
    encrypted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "handle": self.handle,
            "access_address": f"0x{self.access_address:08x}" if self.access_address is not None else None,
            "peer_address": self.peer_address,
            "peer_address_random": self.peer_address_random,
            "peer_name": self.peer_name,
            "started": self.started,
            "ended": self.ended,
            "encrypted": self.encrypted,
        }


class ConnectionRegistry:
    """Builds :class:`Connection` records while a capture is decoded."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        self._current_by_key: dict[tuple[str, int], str] = {}
        self._closed_keys: set[tuple[str, int]] = set()
        self._names: dict[str, str] = {}

    def open(self, kind: str, number: int, **details: Any) -> str:
        """Start a new connection (``kind`` ``hci`` or ``ll``) and return its id."""
        key = (kind, number)
        base = f"{kind}:0x{number:04x}" if kind == "hci" else f"{kind}:0x{number:08x}"
        connection_id = base
        generation = 1
        while connection_id in self._connections:
            generation += 1
            connection_id = f"{base}#{generation}"
        self._current_by_key[key] = connection_id
        self._closed_keys.discard(key)
        field_values: dict[str, Any] = {"handle": number} if kind == "hci" else {"access_address": number}
        field_values.update(details)
        self._connections[connection_id] = Connection(id=connection_id, **field_values)
        return connection_id

    def current(self, kind: str, number: int) -> str:
        """The id of the live connection for a handle/access address, opening one if none is known."""
        key = (kind, number)
        connection_id = self._current_by_key.get(key)
        if connection_id is None or key in self._closed_keys:
            connection_id = self.open(kind, number)
        return connection_id

    def close(self, kind: str, number: int, timestamp: float) -> None:
        """Mark the live connection for a handle/access address as ended."""
        key = (kind, number)
        connection_id = self._current_by_key.get(key)
        if connection_id is None or key in self._closed_keys:
            return
        self._closed_keys.add(key)
        self.update(connection_id, ended=timestamp)

    def update(self, connection_id: str, **details: Any) -> None:
        """Add facts about a connection."""
        self._connections[connection_id] = dataclasses.replace(self._connections[connection_id], **details)

    def get(self, connection_id: str) -> Connection:
        """The connection record as known so far."""
        return self._connections[connection_id]

    def remember_name(self, address: str, name: str) -> None:
        """An advertised name for a device address (applied to connections at the end)."""
        self._names[address] = name

    def connections(self) -> tuple[Connection, ...]:
        """All connections, in the order they were first seen, with advertised names filled in."""
        return tuple(
            dataclasses.replace(connection, peer_name=self._names.get(connection.peer_address or ""))
            if connection.peer_name is None and connection.peer_address in self._names
            else connection
            for connection in self._connections.values()
        )

"""Our Modbus TCP server: MBAP frames over asyncio streams, answered from the :class:`RegisterStore`.

Why our own and not pymodbus's: Modbus TCP is a 7-byte header (transaction id, protocol id, length,
unit id) before a request PDU, and the answers come from requests.py either way; pymodbus (its
framers, PDU classes, client package, simulator and pyserial) cost a gateway about 1.5 MB resident, and
2 MB more for a moment at import, for that. pymodbus still serves RTU and writes in client mode
(server.py), where its serial framing earns its place.

Each connection is read one frame at a time and answered in order, so pipelined requests (several in one
segment, or a frame split across segments) are all answered. A Modbus TCP server is the end device: it
answers whatever unit id a master uses (0, 1 and 255 are all common). A header whose length cannot be a
Modbus PDU means the stream is out of step: the connection is closed, as the master will reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Final

from bmsgate.errors import SinkError
from bmsgate.inverter.modbus.requests import answer
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.store import RegisterStore
from bmsgate.runtime.backoff import Backoff

__all__ = ["MAX_CONNECTIONS", "ModbusTcpServer"]

_LOGGER = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">HHHB")
"""MBAP: transaction id, protocol id, length (unit id + PDU), unit id."""
_MAX_PDU: Final = 253
_MAX_BACKOFF: Final = 30.0
MAX_CONNECTIONS: Final = 16
"""Masters served at once: an inverter, a logger and a few tools. Beyond that it is a leak or an attack on
the LAN, and each held connection costs the gateway a task and buffers, so newer ones are closed at once."""


class ModbusTcpServer:
    """A Modbus TCP server over a :class:`RegisterStore`; reopens its port with backoff on failure.

    Args:
        settings: mode ``tcp``, its host and port.
        store: the datastore to serve.
    """

    def __init__(self, settings: ModbusSettings, store: RegisterStore) -> None:
        if settings.mode != "tcp":
            raise ValueError(f"ModbusTcpServer serves tcp, not {settings.mode!r}")
        self._settings = settings
        self._store = store
        self._connections: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()
        """Set while the server is accepting requests (tests and the CLI wait on it)."""

    @property
    def endpoint(self) -> str:
        """Where the server listens, for logs."""
        return f"tcp://{self._settings.host}:{self._settings.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= MAX_CONNECTIONS:
            _LOGGER.debug("refusing a Modbus TCP connection: %d already open", len(self._connections))
            writer.close()
            return
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                header = await reader.readexactly(_HEADER.size)
                transaction, protocol, length, unit = _HEADER.unpack(header)
                # Protocol id 0 is Modbus; anything else is another protocol or a stream out of step.
                if protocol != 0 or not 2 <= length <= _MAX_PDU + 1:
                    _LOGGER.debug("closing a Modbus TCP connection: protocol %d, header length %d", protocol, length)
                    return
                response = answer(self._store, await reader.readexactly(length - 1))
                writer.write(_HEADER.pack(transaction, protocol, len(response) + 1, unit) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the master went away, possibly mid-frame
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def start(self) -> asyncio.Server:
        """Open the listener once.

        Returns:
            The server (to pass to :meth:`stop`).

        Raises:
            SinkError: the port could not be opened.
        """
        settings = self._settings
        try:
            server = await asyncio.start_server(self._serve, settings.host, settings.port)
        except OSError as exc:
            raise SinkError(f"cannot open {self.endpoint}: {exc}", sink="modbus") from exc
        self.listening.set()
        return server

    async def stop(self, server: asyncio.Server) -> None:
        """Close a listener opened by :meth:`start`, and the connections it accepted."""
        self.listening.clear()
        server.close()
        for connection in list(self._connections):
            connection.cancel()
        for connection in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await connection
        await server.wait_closed()

    async def run(self) -> None:
        """Serve until cancelled, reopening the port with backoff when it cannot be opened."""
        backoff = Backoff(1.0, _MAX_BACKOFF, jitter=0.1)
        failing = False
        while True:
            try:
                server = await self.start()
            except SinkError as exc:
                if not failing:
                    _LOGGER.warning("Modbus server: %s; retrying", exc)
                    failing = True
                await asyncio.sleep(backoff.next_delay())
                continue
            _LOGGER.info("Modbus server listening on %s (slave id %s)", self.endpoint, self._settings.slave_id)
            failing = False
            backoff.reset()
            try:
                await asyncio.Future()
            finally:
                await self.stop(server)

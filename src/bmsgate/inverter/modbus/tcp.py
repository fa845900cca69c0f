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
import dataclasses
import logging
import socket
import struct
import time
from typing import Final

from bmsgate.errors import SinkError
from bmsgate.inverter.modbus.requests import answer
from bmsgate.inverter.modbus.serving import serve_until_cancelled
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.store import RegisterStore

__all__ = ["MAX_CONNECTIONS", "ModbusTcpServer"]

_LOGGER = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">HHHB")
"""MBAP: transaction id, protocol id, length (unit id + PDU), unit id."""
_MAX_PDU: Final = 253
MAX_CONNECTIONS: Final = 16
"""Masters served at once: an inverter, a logger and a few tools. At the cap the connection idle longest is
dropped for the new one, so masters that vanished without closing (a rebooted inverter, a lost Wi-Fi link)
can never lock a live one out."""
IDLE_TIMEOUT: Final = 120.0
"""Seconds without a request before a connection is closed: masters poll every few seconds, and a
half-open socket never reports itself otherwise (TCP keepalive, also on, takes about two hours by default)."""
_IO_TIMEOUT: Final = 10.0
"""Seconds for the rest of a started frame to arrive, or for a master to take its answer."""
_READ_LIMIT: Final = 4096
_WRITE_HIGH_WATER: Final = 16384
"""A master that sends without reading holds at most these buffers (a Modbus frame is ≤ 260 bytes)."""


@dataclasses.dataclass(slots=True)
class _Connection:
    writer: asyncio.StreamWriter
    last_active: float


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
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self.listening = asyncio.Event()
        """Set while the server is accepting requests (tests and the CLI wait on it)."""

    @property
    def endpoint(self) -> str:
        """Where the server listens, for logs."""
        return f"tcp://{self._settings.host}:{self._settings.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or not self.listening.is_set():  # accepted just as the server stopped
            writer.transport.abort()
            return
        self._make_room()
        connection = _Connection(writer, time.monotonic())
        self._connections[task] = connection
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            writer.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    header = await reader.readexactly(_HEADER.size)
                transaction, protocol, length, unit = _HEADER.unpack(header)
                # Protocol id 0 is Modbus; anything else is another protocol or a stream out of step.
                if protocol != 0 or not 2 <= length <= _MAX_PDU + 1:
                    _LOGGER.debug("closing a Modbus TCP connection: protocol %d, header length %d", protocol, length)
                    return
                async with asyncio.timeout(_IO_TIMEOUT):
                    request = await reader.readexactly(length - 1)
                response = answer(self._store, request)
                writer.write(_HEADER.pack(transaction, protocol, len(response) + 1, unit) + response)
                async with asyncio.timeout(_IO_TIMEOUT):
                    await writer.drain()
                connection.last_active = time.monotonic()
        except TimeoutError:
            _LOGGER.debug("closing an idle or stalled Modbus TCP connection")
        except (asyncio.IncompleteReadError, OSError):
            pass  # the master went away, possibly mid-frame
        except asyncio.CancelledError:
            # Only `stop` cancels a connection; ending normally keeps asyncio (3.11) from logging the
            # cancellation as an error in its stream callback.
            pass
        finally:
            self._connections.pop(task, None)
            # abort, not close: close would wait to flush what a master that stopped reading never takes.
            writer.transport.abort()

    def _make_room(self) -> None:
        if len(self._connections) < MAX_CONNECTIONS:
            return
        task, idle = min(self._connections.items(), key=lambda item: item[1].last_active)
        _LOGGER.debug("%d Modbus TCP connections: dropping the one idle longest", len(self._connections))
        self._connections.pop(task)
        idle.writer.transport.abort()

    async def start(self) -> asyncio.Server:
        """Open the listener once.

        Returns:
            The server (to pass to :meth:`stop`).

        Raises:
            SinkError: the port could not be opened.
        """
        settings = self._settings
        try:
            server = await asyncio.start_server(self._serve, settings.host, settings.port, limit=_READ_LIMIT)
        except OSError as exc:
            raise SinkError(f"cannot open {self.endpoint}: {exc}", sink="modbus") from exc
        self.listening.set()
        return server

    async def stop(self, server: asyncio.Server) -> None:
        """Close a listener opened by :meth:`start`, and the connections it accepted."""
        self.listening.clear()
        server.close()
        tasks = list(self._connections)
        for connection in self._connections.values():
            connection.writer.transport.abort()  # their reads end at once, their tasks return
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await server.wait_closed()

    async def run(self) -> None:
        """Serve until cancelled, reopening the port with backoff when it cannot be opened."""
        await serve_until_cancelled(self, self._settings.slave_id, _LOGGER)

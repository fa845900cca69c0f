"""The pymodbus adapter: serve a register image as an RTU slave, or write it into another device.

This is the only module that imports pymodbus (pinned to 3.8.x: its API changes in most minor
releases), and only a gateway with an RTU or client-mode Modbus output loads it: Modbus TCP is served
by our own server (tcp.py). Everything pymodbus raises is translated into :class:`~bmsgate.errors.SinkError`.

The datastore is the :class:`~bmsgate.inverter.modbus.store.RegisterStore`, refreshed by exactly one
writer (the sink) between requests — all on one event loop, so a request never sees half an update.
Reads outside the map's registers and writes to anything but its writable registers are answered
with the Modbus exception "illegal data address". Only the register functions the datastore implements
are decoded at all (:data:`_SERVED`); every other function code, whatever its body, is answered with
"illegal function", and a served request whose body is cut short with "illegal data value" — never
with one of pymodbus's built-in replies (its FC 0x11 answers "Pymodbus") or an unhandled decode error.
Every request received is answered, in order (pymodbus 3.8 answers only the first of a burst).

pymodbus's own log lines (e.g. "Failed to start server ... address already in use" on every retry) are
dropped unless its logger is enabled for DEBUG: our adapter logs each failure and recovery once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

from pymodbus.datastore import ModbusBaseSlaveContext, ModbusServerContext, ModbusSlaveContext
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    ReadWriteMultipleRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)
from pymodbus.server import ModbusSerialServer
from pymodbus.server.requesthandler import ServerRequestHandler

from bmsgate.errors import SinkError
from bmsgate.inverter.modbus.registermap import contiguous_runs
from bmsgate.inverter.modbus.serving import serve_until_cancelled
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.store import RegisterStore
from bmsgate.runtime.backoff import Backoff

__all__ = ["ModbusClientWriter", "ModbusServer", "RegisterStore"]

_LOGGER = logging.getLogger(__name__)

PYMODBUS_LOGGER: Final = "pymodbus.logging"
"""The one logger pymodbus 3.8 logs through."""


class _OnlyWhenDebugging(logging.Filter):
    """Drops pymodbus's records unless its logger is enabled for DEBUG (e.g. the root level is DEBUG).

    pymodbus warns on every retry of a port that cannot be opened or a device that cannot be reached;
    our adapter already logs such failures once per change, so at INFO and above they are noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_pymodbus_logging() -> None:
    """Install the filter on pymodbus's logger (idempotent; done when this module is imported)."""
    logger = logging.getLogger(PYMODBUS_LOGGER)
    if not any(isinstance(existing, _OnlyWhenDebugging) for existing in logger.filters):
        logger.addFilter(_OnlyWhenDebugging())


quiet_pymodbus_logging()


def release_unused_default_blocks() -> int:
    """Shrink the register blocks pymodbus 3.8 builds, when imported, as ``ModbusSlaveContext``'s defaults.

    Its four default blocks (coils, inputs, holding and input registers) hold 65,536 values each, 2 MB
    for the life of the process; this adapter serves its own :class:`RegisterStore` and never uses
    them. Returns the values released (idempotent: 0 the second time).
    """
    released = 0
    for block in (ModbusSlaveContext.__init__.__kwdefaults__ or {}).values():
        values = getattr(block, "values", None)
        if isinstance(values, list) and len(values) > 1:
            released += len(values) - 1
            block.values = values[:1]
    return released


release_unused_default_blocks()


_MAX_BACKOFF: Final = 30.0


class _PymodbusStore(ModbusBaseSlaveContext):
    """Our :class:`RegisterStore` as the datastore class pymodbus's server context expects."""

    def __init__(self, store: RegisterStore) -> None:
        self._store = store

    def reset(self) -> None:
        """Nothing to reset: values always come from the bank."""

    def validate(self, fc_as_hex: int, address: int, count: int = 1) -> bool:
        """Whether a request may touch these addresses (False → "illegal data address")."""
        return self._store.validate(fc_as_hex, address, count)

    def getValues(self, fc_as_hex: int, address: int, count: int = 1) -> list[int]:  # noqa: N802
        """Values for a validated read."""
        return self._store.getValues(fc_as_hex, address, count)

    def setValues(self, fc_as_hex: int, address: int, values: Sequence[int | bool]) -> None:  # noqa: N802
        """Store a validated write."""
        self._store.setValues(fc_as_hex, address, values)


_SERVED: Final[tuple[type[ModbusPDU], ...]] = (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteSingleRegisterRequest,
    WriteMultipleRegistersRequest,
    MaskWriteRegisterRequest,
    ReadWriteMultipleRegistersRequest,
)
"""The requests the datastore implements; coils and discrete inputs are absent: we have no bit tables."""


class _Refusal(ModbusPDU):
    """A request that is answered with an exception, whatever its body says."""

    # The smallest RTU frame (slave id, function code, CRC): the RTU framer then takes the longest
    # prefix with a valid CRC, so a refused request of any length is consumed whole.
    rtu_frame_size = 4

    def __init__(self, function_code: int = 0, exception_code: int = ExceptionResponse.ILLEGAL_FUNCTION) -> None:
        super().__init__()
        self.function_code = function_code
        self.exception_code = exception_code

    def encode(self) -> bytes:
        """Never sent."""
        return b""

    def decode(self, data: bytes) -> None:
        """The body is irrelevant to a refusal."""
        del data

    async def update_datastore(self, context: object) -> ModbusPDU:
        """The exception response; the datastore is not touched."""
        del context
        return ExceptionResponse(self.function_code, self.exception_code)


class _ServedOnly(DecodePDU):
    """Decodes only :data:`_SERVED` requests; anything else becomes a :class:`_Refusal`, never an error."""

    def __init__(self) -> None:
        super().__init__(True)
        self.lookup = {request.function_code: request for request in _SERVED}
        self.sub_lookup = {}

    def lookupPduClass(self, data: bytes) -> type[ModbusPDU]:  # noqa: N802 - pymodbus's name
        """The request class of an RTU frame (``data[1]`` is its function code), for the frame length."""
        return self.lookup.get(data[1], _Refusal)

    def decode(self, frame: bytes) -> ModbusPDU:
        """One request PDU (function code and body)."""
        function_code = frame[0]
        request_class = self.lookup.get(function_code)
        if request_class is None:
            return _Refusal(function_code)
        request = request_class()
        try:
            request.decode(frame[1:])
        except (struct.error, IndexError, ValueError) as exc:
            # The Modbus spec's answer to a request whose implied length is wrong.
            _LOGGER.debug("malformed request with function code %#04x: %s", function_code, exc)
            return _Refusal(function_code, ExceptionResponse.ILLEGAL_VALUE)
        return request


class _RequestHandler(ServerRequestHandler):
    """The serial line: answers every request received, one after another.

    pymodbus 3.8 takes one request per receive call and leaves the rest of the buffer until more bytes
    arrive, so a master that sends requests back to back waits for answers forever. (pymodbus empties
    its receive buffer on every send: on RTU that is a resynchronisation after line noise, so it stays.)
    """

    def __init__(self, owner: Any) -> None:
        super().__init__(owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect)  # type: ignore[no-untyped-call]
        self._pending: collections.deque[tuple[ModbusPDU, Any]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """Take every complete request out of `data`; returns the number of bytes consumed."""
        data = self.trace_packet(False, data)
        used = 0
        try:
            while True:
                size, request = self.framer.processIncomingFrame(data[used:])
                if not size:
                    break
                used += size
                if request is not None:
                    self._pending.append((self.trace_pdu(False, request), addr))
        except ModbusException as exc:
            # Bytes no frame can be made of: drop them, as a device on a noisy line would.
            _LOGGER.debug("dropping %d undecodable bytes: %s", len(data) - used, exc)
            used = len(data)
        if self._pending and (self._worker is None or self._worker.done()):
            self._worker = self.loop.create_task(self._answer_pending(), name="modbus-requests")
        return used

    async def _answer_pending(self) -> None:
        while self._pending:
            self.last_pdu, self.last_addr = self._pending.popleft()
            await self.handle_request()  # type: ignore[no-untyped-call]

    def callback_disconnected(self, call_exc: Exception | None) -> None:
        """Forget what a closed connection still asked for."""
        self._pending.clear()
        if self._worker is not None:
            self._worker.cancel()
        super().callback_disconnected(call_exc)


class _SerialServer(ModbusSerialServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        """Our handler for the line."""
        if self.trace_connect is not None:
            self.trace_connect(True)
        return _RequestHandler(self)


class ModbusServer:
    """A Modbus RTU slave over a :class:`RegisterStore`; restarts itself on failure.

    Modbus TCP is served by our own :class:`~bmsgate.inverter.modbus.tcp.ModbusTcpServer`.

    Args:
        settings: mode ``rtu`` and its serial line.
        store: the datastore to serve.
    """

    def __init__(self, settings: ModbusSettings, store: RegisterStore) -> None:
        if settings.mode != "rtu":
            raise ValueError(f"ModbusServer serves rtu, not {settings.mode!r}")
        self._settings = settings
        # On a shared RS485 bus only our slave id is ours.
        self._context = ModbusServerContext(  # type: ignore[no-untyped-call]
            slaves={settings.slave_id: _PymodbusStore(store)}, single=False
        )
        self.listening = asyncio.Event()
        """Set while the server is accepting requests (tests and the CLI wait on it)."""

    @property
    def endpoint(self) -> str:
        """The serial line, for logs."""
        settings = self._settings
        return f"rtu:{settings.serial_port}@{settings.baudrate}{settings.parity}{settings.stopbits}"

    def _create(self) -> Any:
        settings = self._settings
        server = _SerialServer(
            self._context,
            framer=FramerType.RTU,
            port=settings.serial_port,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            ignore_missing_slaves=True,
        )
        # Handlers build their framer from the server's decoder when a connection (or the line) opens.
        server.decoder = _ServedOnly()
        return server

    async def start(self) -> Any:
        """Open the listener once.

        Returns:
            The pymodbus server object (to pass to :meth:`stop`).

        Raises:
            SinkError: the port could not be opened.
        """
        try:
            server = self._create()
            listening = await server.listen()
        except (ModbusException, OSError) as exc:
            raise SinkError(f"cannot open {self.endpoint}: {exc}", sink="modbus") from exc
        if not listening:
            raise SinkError(f"cannot open {self.endpoint}", sink="modbus")
        self.listening.set()
        return server

    async def stop(self, server: Any) -> None:
        """Close a listener opened by :meth:`start`."""
        self.listening.clear()
        await server.shutdown()

    async def run(self) -> None:
        """Serve until cancelled, reopening the port with backoff when it cannot be opened."""
        await serve_until_cancelled(self, self._settings.slave_id, _LOGGER)


class ModbusClientWriter:
    """Client mode: write the map's holding registers into another device at an interval.

    Args:
        settings: mode ``client``; `client_transport` picks TCP or RTU.
        image: returns the holding registers to write (address → value).
    """

    def __init__(self, settings: ModbusSettings, image: Callable[[], dict[int, int]]) -> None:
        self._settings = settings
        self._image = image
        self.writes = 0
        """Successful write cycles (for diagnostics and tests)."""
        self.written = asyncio.Event()
        """Set after every successful write cycle."""

    def _create(self) -> Any:
        # pymodbus's client package (TCP, TLS, UDP, serial clients and their mixin: about 1 MB resident) is
        # loaded only by a gateway that writes into another device, never by one that serves.
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient  # noqa: PLC0415

        settings = self._settings
        if settings.client_transport == "tcp":
            return AsyncModbusTcpClient(
                settings.host,
                port=settings.port,
                timeout=settings.client_timeout,
                retries=0,
                reconnect_delay=0,  # we reconnect ourselves, with our own backoff and logging
            )
        return AsyncModbusSerialClient(
            settings.serial_port or "",
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=settings.client_timeout,
            retries=0,
            reconnect_delay=0,
        )

    @property
    def endpoint(self) -> str:
        """The device written to, for logs."""
        settings = self._settings
        if settings.client_transport == "tcp":
            return f"tcp://{settings.host}:{settings.port}"
        return f"rtu:{settings.serial_port}"

    async def _connect(self, client: Any) -> None:
        if client.connected:
            return
        try:
            connected = await client.connect()
        except (ModbusException, OSError) as exc:
            raise SinkError(f"cannot connect to {self.endpoint}: {exc}", sink="modbus") from exc
        if not connected:
            raise SinkError(f"cannot connect to {self.endpoint}", sink="modbus")

    async def write_once(self, client: Any) -> None:
        """Write every holding register of the image once.

        Raises:
            SinkError: the device did not accept a write or the link failed.
        """
        slave = self._settings.slave_id
        for start, values in contiguous_runs(self._image()):
            try:
                if len(values) == 1:
                    response = await client.write_register(start, values[0], slave=slave)
                else:
                    response = await client.write_registers(start, values, slave=slave)
            except (ModbusException, OSError) as exc:
                raise SinkError(f"writing {len(values)} registers at {start} failed: {exc}", sink="modbus") from exc
            if response.isError():
                raise SinkError(
                    f"{self.endpoint} refused a write at {start}: exception code "
                    f"{getattr(response, 'exception_code', '?')}",
                    sink="modbus",
                )

    async def run(self) -> None:
        """Write at the configured interval until cancelled; reconnect with backoff."""
        settings = self._settings
        client = self._create()
        backoff = Backoff(1.0, _MAX_BACKOFF, jitter=0.1)
        failing = False
        try:
            while True:
                try:
                    await self._connect(client)
                    await self.write_once(client)
                except SinkError as exc:
                    if not failing:
                        _LOGGER.warning("Modbus client: %s; retrying", exc)
                        failing = True
                    client.close()
                    await asyncio.sleep(backoff.next_delay())
                    continue
                if failing:
                    _LOGGER.info("Modbus client: writing to %s again", self.endpoint)
                failing = False
                backoff.reset()
                self.writes += 1
                self.written.set()
                await asyncio.sleep(settings.client_interval)
        finally:
            client.close()

"""UART / RS485 transport on pyserial-asyncio-fast (the only module importing pyserial).

Many BMSes speak the same frames over a wire as over BLE (JBD boards: 9600 8N1, because their BLE module
is a transparent UART bridge). Line settings come from the definition's ``serial`` block and can be
overridden per battery. Received bytes are delivered as the chunks the port read returns; the protocol
engine reassembles frames across chunk boundaries exactly as it does for BLE notifications. A port that
disappears (USB adapter unplugged) ends the link with a `ConnectError` naming the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, Literal

import serial
import serial_asyncio_fast

from bmsgate.errors import ConnectError
from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.protocols.definition import SerialSpec
from bmsgate.transports.base import Transport

__all__ = ["SerialTransport"]

_LOGGER = logging.getLogger(__name__)
_CLOSE_TIMEOUT: Final = 2.0


class _PortProtocol(asyncio.Protocol):
    """asyncio protocol that forwards to the transport (bytes in, loss of the port)."""

    def __init__(self, owner: SerialTransport) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._deliver(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._port_lost(exc)


class SerialTransport(Transport):
    """Moves frames over a serial port.

    Args:
        port: device path (``/dev/ttyUSB0``) or a pyserial URL (``rfc2217://host:port``).
        protocol: supplies the default line settings (its ``serial`` block); None = 9600 8N1.
        baudrate: overrides the definition.
        bytesize: overrides the definition (7 or 8).
        parity: overrides the definition (``N``, ``E``, ``O``).
        stopbits: overrides the definition (1 or 2).
        battery_id: carried by errors.
    """

    kind = "serial"

    def __init__(
        self,
        port: str,
        protocol: CompiledProtocol | None = None,
        *,
        baudrate: int | None = None,
        bytesize: Literal[7, 8] | None = None,
        parity: Literal["N", "E", "O"] | None = None,
        stopbits: Literal[1, 2] | None = None,
        battery_id: str | None = None,
    ) -> None:
        super().__init__(battery_id=battery_id)
        spec = (protocol.definition.serial if protocol is not None else None) or SerialSpec()
        self.port = port
        self.settings = SerialSpec(
            baudrate=baudrate or spec.baudrate,
            bytesize=bytesize or spec.bytesize,
            parity=parity or spec.parity,
            stopbits=stopbits or spec.stopbits,
        )
        self._transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] | None = None

    @property
    def description(self) -> str:
        """``serial:/dev/ttyUSB0@9600/8N1``."""
        settings = self.settings
        return f"serial:{self.port}@{settings.baudrate}/{settings.bytesize}{settings.parity}{settings.stopbits}"

    async def _do_open(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        self._closed = loop.create_future()
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: _PortProtocol(self),
                self.port,
                baudrate=settings.baudrate,
                bytesize=settings.bytesize,
                parity=settings.parity,
                stopbits=settings.stopbits,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectError(
                f"{self.description}: cannot open the port: {_reason(exc)}", battery_id=self.battery_id
            ) from exc
        self._transport = transport
        _LOGGER.debug("%s: opened", self.description)

    async def _do_close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        transport.close()
        if self._closed is not None and not self._closed.done():
            # Wait for pyserial-asyncio to release the file descriptor before a reopen.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await asyncio.shield(self._closed)

    async def _do_write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectError(f"{self.description}: the port is closed", battery_id=self.battery_id)
        transport.write(data)

    def _port_lost(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._transport = None
        if exc is None:
            return
        _LOGGER.warning("%s: port lost: %s", self.description, _reason(exc))
        self._connection_lost(
            ConnectError(f"{self.description}: the port went away ({_reason(exc)})", battery_id=self.battery_id)
        )


def _reason(exc: Any) -> str:
    text = str(exc) or type(exc).__name__
    if "Permission denied" in text:
        return f"{text} (is the user in the 'dialout' group?)"
    if "No such file" in text or "could not open port" in text:
        return f"{text} (is the adapter plugged in and the path right?)"
    return text

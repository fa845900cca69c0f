"""The Transport contract: moves bytes to and from one device, knows no vendor.

A transport is opened, written to, and yields received chunks (one BLE notification, one serial read)
through :meth:`Transport.receive`. Implementations push chunks with :meth:`Transport._deliver` (safe to
call from library callbacks on the event loop thread) and report a dropped link with
:meth:`Transport._connection_lost`. Every library failure surfaces as a `TransportError`.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from types import TracebackType
from typing import Final, Self

from bmsgate.errors import ConnectError, DeviceTimeout, TransportError

__all__ = ["Transport"]

_MAX_PENDING_CHUNKS: Final = 4096
"""Chunks buffered while nobody reads; beyond that the oldest are dropped (a silent reader is a bug)."""


def _wake(reader: asyncio.Future[bool], arrived: bool) -> None:
    if not reader.done():
        reader.set_result(arrived)


class Transport(abc.ABC):
    """Base class for byte movers (BLE, serial, simulator, replay, TCP)."""

    #: short kind name shown in logs and link statistics ("ble", "serial", "simulator", ...)
    kind: str = "transport"

    def __init__(self, *, battery_id: str | None = None) -> None:
        self.battery_id = battery_id
        # A deque and a future per waiting reader, not an asyncio.Queue under asyncio.timeout: every poll request
        # waits for its reply here, and a timer that resolves the future costs no cancellation (as in
        # runtime/wakeup.py) and no Queue getter bookkeeping.
        self._chunks: collections.deque[bytes | TransportError] = collections.deque()
        self._readers: list[asyncio.Future[bool]] = []
        self._open = False
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- to implement -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def _do_open(self) -> None:
        """Connect; raise `TransportError` (usually `ConnectError`) on failure."""

    @abc.abstractmethod
    async def _do_close(self) -> None:
        """Disconnect; must not raise for an already-dropped link."""

    @abc.abstractmethod
    async def _do_write(self, data: bytes) -> None:
        """Send bytes; raise `TransportError` on failure."""

    @property
    def description(self) -> str:
        """Where this transport goes (address, port), for logs."""
        return self.kind

    @property
    def rssi(self) -> int | None:
        """Signal strength in dBm where the transport knows it."""
        return None

    @property
    def device_name(self) -> str | None:
        """The device's advertised name where the transport knows it (requests built from it need it)."""
        return None

    # -- public API ---------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close` or a dropped link."""
        return self._open

    async def open(self) -> None:
        """Connect (no-op when already open)."""
        if self._open:
            return
        self._drain()
        await self._do_open()
        self._open = True

    async def close(self) -> None:
        """Disconnect (no-op when closed)."""
        was_open, self._open = self._open, False
        if was_open:
            # A reader waiting without a timeout would otherwise wait for a link that is gone.
            self._wake_readers()
            await self._do_close()

    async def write(self, data: bytes) -> None:
        """Send one request frame."""
        if not self._open:
            raise ConnectError(f"{self.description}: not connected", battery_id=self.battery_id)
        await self._do_write(data)
        self.bytes_sent += len(data)

    async def receive(self, timeout: float | None = None) -> bytes:
        """The next received chunk.

        Raises:
            DeviceTimeout: nothing arrived within `timeout` seconds.
            ConnectError: the link dropped (or is not open and nothing is buffered).
        """
        chunks = self._chunks
        deadline: float | None = None
        # A reply's later notifications are usually queued already: no timer to arm and cancel for them.
        while not chunks:
            if not self._open:
                raise ConnectError(f"{self.description}: not connected", battery_id=self.battery_id)
            loop = asyncio.get_running_loop()
            if deadline is None and timeout is not None:
                # Once: a reader woken for a chunk another reader took waits only for what is left.
                deadline = loop.time() + timeout
            reader: asyncio.Future[bool] = loop.create_future()
            self._readers.append(reader)
            timer = None if deadline is None else loop.call_at(deadline, _wake, reader, False)
            try:
                arrived = await reader
            finally:
                self._readers.remove(reader)
                if timer is not None:
                    timer.cancel()
            if not arrived and not chunks:
                raise DeviceTimeout(f"{self.description}: no data within {timeout:.1f} s", battery_id=self.battery_id)
        item = chunks.popleft()
        if isinstance(item, TransportError):
            raise item
        return item

    def receive_nowait(self) -> bytes | None:
        """A chunk that has already arrived, or None (never waits).

        Raises:
            ConnectError: the link dropped.
        """
        if not self._chunks:
            return None
        item = self._chunks.popleft()
        if isinstance(item, TransportError):
            raise item
        return item

    def discard_pending(self) -> int:
        """Drop chunks received but not read (e.g. a late reply to an abandoned request)."""
        return self._drain()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- for implementations --------------------------------------------------------------------

    def _deliver(self, chunk: bytes) -> None:
        if not chunk:
            return
        if len(self._chunks) >= _MAX_PENDING_CHUNKS:
            self._chunks.popleft()
        self.bytes_received += len(chunk)
        self._chunks.append(bytes(chunk))
        self._wake_readers()

    def _wake_readers(self) -> None:
        for reader in self._readers:
            _wake(reader, True)

    def _connection_lost(self, error: TransportError | None = None) -> None:
        if not self._open:
            return
        self._open = False
        self._chunks.append(error or ConnectError(f"{self.description}: link dropped", battery_id=self.battery_id))
        self._wake_readers()

    def _drain(self) -> int:
        dropped = len(self._chunks)
        self._chunks.clear()
        return dropped

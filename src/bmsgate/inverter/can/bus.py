"""The python-can adapter: open a bus, send frames, receive frames (the only python-can import).

Every python-can failure becomes :class:`~bmsgate.errors.SinkError`; the sink answers it by closing
the bus and reopening it with backoff, which is also how a controller that went bus-off is restarted
(socketcan additionally restarts by itself when the interface has ``restart-ms`` set).

Receiving runs on one daemon thread per open bus (python-can's ``recv`` blocks), which hands frames
and errors to the event loop; sending runs in a worker thread so a full transmit queue never stalls
the loop. python-can's virtual bus (an in-process queue) needs no thread: its receive queue is replaced by
one that hands each frame to the event loop as it is put, directly when the sender runs on the loop's
thread (the demo's simulated inverter), through ``call_soon_threadsafe`` otherwise. A thread there cost a
thread switch and a second wake-up of the loop for every frame the inverter sent. A bus opened with
``receive=False`` (the demo's simulated inverter, which only counts what it is sent) has no thread either;
its owner discards the queued frames from time to time (:meth:`CanBus.discard_received`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

import can
from can.interfaces.virtual import VirtualBus
from can.interfaces.virtual import channels_lock as virtual_channels_lock

from bmsgate.errors import SinkError
from bmsgate.inverter.can.profiles import CanFrame
from bmsgate.inverter.can.settings import CanSettings

__all__ = ["CanBus", "FrameBus", "NullBus", "open_bus"]

_LOGGER = logging.getLogger(__name__)

_RECV_TIMEOUT: Final = 0.5
"""How long one blocking ``recv`` waits on a real bus: how soon the reader thread notices a close. Each
expiry wakes the thread and takes the GIL (about 0.1 ms through python-can), so no shorter than a close
needs: 20 wake-ups a second per bus were 2 ms of CPU a second each. (A reader on a virtual bus, only a
subclass's or a filtering one's, waits untimed.)"""
_BATCH: Final = 64
"""Frames handed to the event loop at most in one wake-up."""
_CAN_ERR_BUSOFF: Final = 0x40
"""Error class bit of a Linux error frame: the controller went bus-off."""

BusFactory = Callable[[], can.BusABC]


class FrameBus(Protocol):
    """What the sink needs from a bus."""

    async def send(self, frames: list[CanFrame]) -> None:
        """Send frames in order."""

    async def receive(self) -> CanFrame:
        """Wait for the next frame from the bus."""

    async def close(self) -> None:
        """Release the bus (idempotent)."""


class _HandedOverQueue(queue.Queue[can.Message]):
    """A virtual bus's receive queue that gives each message to the event loop instead of keeping it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, take: Callable[[can.Message], None]) -> None:
        super().__init__()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._take = take

    def put(self, item: can.Message, block: bool = True, timeout: float | None = None) -> None:
        del block, timeout  # never full: the loop's queue takes every frame
        if threading.get_ident() == self._loop_thread:
            self._take(item)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is listening any more
            self._loop.call_soon_threadsafe(self._take, item)


class CanBus:
    """A python-can bus for the sink.

    Args:
        settings: interface, channel and bitrate.
        factory: creates the python-can bus (tests inject faulty buses here); defaults to
            ``can.Bus`` from `settings`.
    """

    def __init__(self, settings: CanSettings, factory: BusFactory | None = None) -> None:
        self.settings = settings
        self._factory = factory or self._default_factory
        self._bus: can.BusABC | None = None
        self._queue: asyncio.Queue[CanFrame | SinkError] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error_frames = 0
        self._failed_virtual = False

    def _default_factory(self) -> can.BusABC:
        settings = self.settings
        if settings.interface == "slcan":
            return can.Bus(interface="slcan", channel=settings.channel, bitrate=settings.bitrate)
        if settings.interface == "socketcan":
            # The bitrate is the interface's business (ip link set can0 up type can bitrate 500000).
            return can.Bus(interface="socketcan", channel=settings.channel)
        return can.Bus(interface="virtual", channel=settings.channel, receive_own_messages=False)

    def open(self, *, receive: bool = True) -> None:
        """Open the bus and start receiving (with `receive` false: queue only, see :meth:`discard_received`).

        Raises:
            SinkError: python-can could not open it.
        """
        try:
            self._bus = self._factory()
        except (can.CanError, OSError, ValueError) as exc:
            raise SinkError(
                f"cannot open {self.settings.interface} bus {self.settings.channel}: {exc}", sink="can"
            ) from exc
        self._stop.clear()
        self._failed_virtual = False
        if not receive:
            return
        loop = asyncio.get_running_loop()
        if type(self._bus) is VirtualBus:
            # Only an exact VirtualBus: a subclass may receive differently.
            self._receive_virtual(self._bus, loop)
            return
        self._thread = threading.Thread(
            target=self._reader, args=(self._bus, loop), name=f"can-rx-{self.settings.channel}", daemon=True
        )
        self._thread.start()

    def _receive_virtual(self, bus: VirtualBus, loop: asyncio.AbstractEventLoop) -> None:
        """Take `bus`'s frames as senders put them (see the module's docstring), keeping what was queued."""
        handed_over = _HandedOverQueue(loop, lambda message: self._take_virtual(bus, message))
        try:
            bus._check_if_open()
            own = bus.queue
            with virtual_channels_lock, own.mutex:
                for message in own.queue:  # frames already waiting: first, in order
                    handed_over.put(message)
                own.queue.clear()
                # A sender on another thread takes neither lock before its put: one that picked the old
                # queue just before the swap still puts into it, and each put ends in `_put` under the
                # queue's mutex, so this hands such a frame over too, in order.
                own._put = handed_over.put  # type: ignore[method-assign]
                bus.channel[bus.channel.index(own)] = handed_over
                bus.queue = handed_over
        except (can.CanError, ValueError) as exc:  # shut down meanwhile: its queue left the channel
            raise SinkError(f"cannot receive on virtual bus {self.settings.channel}: {exc}", sink="can") from exc

    def _take_virtual(self, bus: VirtualBus, message: can.Message) -> None:
        # Runs on the loop's thread. What the reader thread makes of a message, without its batching
        # (each frame is handed over as it is sent). Like the reader, it stops at a failure or a close,
        # and it applies the bus's software filters as python-can's recv does.
        if self._failed_virtual or self._stop.is_set() or not bus._matches_filters(message):
            return
        item = self._item(message)
        if item is None:
            return
        self._failed_virtual = isinstance(item, SinkError)
        self._queue.put_nowait(item)

    def _item(self, message: can.Message) -> CanFrame | SinkError | None:
        """A received message as the sink sees it: a frame, a bus-off failure, or nothing (line noise, counted)."""
        if message.is_error_frame:
            if message.arbitration_id & _CAN_ERR_BUSOFF:
                return SinkError("controller is bus-off", sink="can")
            # Other error frames (lost arbitration, no ACK, ...) are line noise: counted only.
            self.error_frames += 1
            return None
        return CanFrame(message.arbitration_id, bytes(message.data), bool(message.is_extended_id))

    def _reader(self, bus: can.BusABC, loop: asyncio.AbstractEventLoop) -> None:
        # Runs on its own thread: every outcome is handed to the loop, nothing is raised here. A burst
        # (an inverter's frame set) is read on without waiting and handed over in one loop wake-up.
        first_timeout = None if isinstance(bus, VirtualBus) else _RECV_TIMEOUT  # see close()
        while not self._stop.is_set():
            batch: list[CanFrame | SinkError] = []
            timeout: float | None = first_timeout
            while len(batch) < _BATCH:
                try:
                    message = bus.recv(timeout)
                except (can.CanError, OSError, ValueError) as exc:
                    error = SinkError(f"receive failed: {exc}", sink="can")
                    error.__cause__ = exc
                    self._hand_over(loop, [*batch, error])
                    return
                if self._stop.is_set():
                    return  # closing (or close's wake-up frame): nobody is listening any more
                if message is None:
                    break
                timeout = 0.0
                item = self._item(message)
                if isinstance(item, SinkError):
                    self._hand_over(loop, [*batch, item])
                    return
                if item is not None:
                    batch.append(item)
            if batch:
                self._hand_over(loop, batch)

    def _hand_over(self, loop: asyncio.AbstractEventLoop, items: list[CanFrame | SinkError]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody is listening any more
            loop.call_soon_threadsafe(self._put_all, items)

    def _put_all(self, items: list[CanFrame | SinkError]) -> None:
        for item in items:
            self._queue.put_nowait(item)

    async def receive(self) -> CanFrame:
        """The next data frame from the bus.

        Raises:
            SinkError: the bus failed (including bus-off).
        """
        item = await self._queue.get()
        if isinstance(item, SinkError):
            raise item
        return item

    async def send(self, frames: list[CanFrame]) -> None:
        """Send frames in order (in a worker thread: a full queue must not stall the event loop).

        Raises:
            SinkError: python-can refused a frame (bus-off, no buffer space, interface down).
        """
        bus = self._bus
        if bus is None:
            raise SinkError("the bus is not open", sink="can")
        if type(bus) is VirtualBus:
            # A virtual bus's send is a put into in-process queues: it cannot block, so no thread hand-off.
            self._deliver_virtual(bus, frames)
            return
        messages = [
            can.Message(arbitration_id=f.arbitration_id, data=f.data, is_extended_id=f.is_extended_id) for f in frames
        ]
        if self.settings.interface == "virtual":
            self._send_all(bus, messages)
            return
        await asyncio.to_thread(self._send_all, bus, messages)

    def _send_all(self, bus: can.BusABC, messages: list[can.Message]) -> None:
        try:
            for message in messages:
                bus.send(message, timeout=self.settings.send_timeout)
        except (can.CanError, OSError, ValueError) as exc:
            raise SinkError(f"send failed: {exc}", sink="can") from exc

    def _deliver_virtual(self, bus: VirtualBus, frames: list[CanFrame]) -> None:
        """What ``VirtualBus.send`` does for each frame, building each receiver's message directly.

        python-can builds a message and then deep-copies it for every receiver (about 10 µs a copy, most
        of a frame set's cost in the demo). A message built per receiver from the frame's immutable
        bytes is the same message (same fields, timestamp, channel and direction), and no receiver can
        change what another receives or what was sent. Only an exact ``VirtualBus`` comes here: a
        subclass may send differently (the tests' faulty buses do).

        Raises:
            SinkError: the bus is closed or a receiver's queue stayed full (as python-can would refuse it).
        """
        timeout = self.settings.send_timeout
        try:
            bus._check_if_open()  # the check VirtualBus.send makes first
            for frame in frames:
                # A preserved timestamp is the message's own: 0.0 for one built without (as send() builds it).
                timestamp = 0.0 if bus.preserve_timestamps else time.time()
                all_sent = True
                for receiver in bus.channel:
                    own = receiver is bus.queue
                    if own and not bus.receive_own_messages:
                        continue
                    message = can.Message(
                        timestamp=timestamp,
                        arbitration_id=frame.arbitration_id,
                        is_extended_id=frame.is_extended_id,
                        channel=bus.channel_id,
                        data=frame.data,
                        is_rx=not own,
                    )
                    try:
                        receiver.put(message, block=True, timeout=timeout)
                    except queue.Full:
                        all_sent = False
                if not all_sent:
                    raise can.CanOperationError("Could not send message to one or more recipients")
        except (can.CanError, OSError, ValueError) as exc:
            raise SinkError(f"send failed: {exc}", sink="can") from exc

    def discard_received(self) -> int:
        """Drop the frames queued on a bus opened with ``receive=False``, without waiting; returns how many.

        Raises:
            SinkError: the bus failed.
        """
        bus = self._bus
        if bus is None:
            raise SinkError("the bus is not open", sink="can")
        count = 0
        try:
            if type(bus) is VirtualBus and not bus.filters:
                # Nothing is read, so python-can's recv (a filter check and a timed wait per frame) is skipped:
                # the frames are taken off the bus's own queue, where its recv would take them from.
                bus._check_if_open()
                with contextlib.suppress(queue.Empty):
                    while True:
                        bus.queue.get_nowait()
                        count += 1
                return count
            while bus.recv(0.0) is not None:
                count += 1
        except (can.CanError, OSError, ValueError) as exc:
            raise SinkError(f"receive failed: {exc}", sink="can") from exc
        return count

    async def close(self) -> None:
        """Stop receiving and shut the bus down (idempotent)."""
        self._stop.set()
        if isinstance(self._bus, VirtualBus) and self._thread is not None:
            # A reader waits without a timeout on a virtual bus (a subclass's: an exact one has no reader):
            # a frame in its own queue wakes it.
            self._bus.queue.put_nowait(can.Message(arbitration_id=0, data=b""))
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except (can.CanError, OSError) as exc:
                _LOGGER.debug("CAN: error while shutting the bus down: %s", exc)


class NullBus:
    """No bus at all (dry run): frames are only logged, nothing is ever received."""

    async def send(self, frames: list[CanFrame]) -> None:
        """Discard the frames."""
        del frames

    async def receive(self) -> CanFrame:
        """Never returns."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Nothing to release."""


def open_bus(settings: CanSettings, factory: BusFactory | None = None) -> FrameBus:
    """Open the bus the settings describe (or a :class:`NullBus` for a dry run).

    Raises:
        SinkError: the bus cannot be opened.
    """
    if settings.dry_run:
        return NullBus()
    bus = CanBus(settings, factory)
    bus.open()
    return bus

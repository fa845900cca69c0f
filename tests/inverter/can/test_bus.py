"""The python-can adapter's receiving: the virtual bus's untimed reader, and a bus opened without one."""

from __future__ import annotations

import asyncio
import threading
import time

import can
import pytest

from bmsgate.errors import SinkError
from bmsgate.inverter.can.bus import CanBus
from bmsgate.inverter.can.profiles import CanFrame
from bmsgate.inverter.can.settings import CanSettings

from .helpers import channel_name


def _reader_threads(channel: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"can-rx-{channel}"]


async def test_a_virtual_bus_delivers_frames_and_closes_at_once() -> None:
    channel = channel_name()
    bus = CanBus(CanSettings(interface="virtual", channel=channel))
    bus.open()
    peer = can.Bus(interface="virtual", channel=channel)
    try:
        peer.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
        async with asyncio.timeout(2.0):
            frame = await bus.receive()
        assert frame == CanFrame(0x305, bytes(8), False)
        # The reader waits without a timeout: the close must wake it, not a timeout running out.
        started = time.monotonic()
        await bus.close()
        assert time.monotonic() - started < 0.3
        assert not _reader_threads(channel)
    finally:
        peer.shutdown()
        await bus.close()


async def test_a_bus_opened_without_receiving_queues_and_discards() -> None:
    channel = channel_name()
    bus = CanBus(CanSettings(interface="virtual", channel=channel))
    bus.open(receive=False)
    peer = can.Bus(interface="virtual", channel=channel)
    try:
        assert not _reader_threads(channel)
        assert bus.discard_received() == 0
        for frame_id in (0x351, 0x355, 0x356):
            peer.send(can.Message(arbitration_id=frame_id, data=bytes(8), is_extended_id=False))
        assert bus.discard_received() == 3
        assert bus.discard_received() == 0
    finally:
        peer.shutdown()
        await bus.close()
    with pytest.raises(SinkError, match="not open"):
        bus.discard_received()

"""The python-can adapter's receiving: the virtual bus without a reader thread, and a bus opened without receiving."""

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


def _send(peer: can.BusABC, frame_id: int) -> None:
    peer.send(can.Message(arbitration_id=frame_id, data=bytes(8), is_extended_id=False))


async def _next_frame(bus: CanBus) -> CanFrame:
    async with asyncio.timeout(2.0):
        return await bus.receive()


async def _assert_closes_at_once_without_a_reader(bus: CanBus, channel: str) -> None:
    started = time.monotonic()
    await bus.close()
    assert time.monotonic() - started < 0.3
    assert not _reader_threads(channel)


async def test_a_virtual_bus_delivers_frames_and_closes_at_once() -> None:
    channel = channel_name()
    bus = CanBus(CanSettings(interface="virtual", channel=channel))
    bus.open()
    peer = can.Bus(interface="virtual", channel=channel)
    try:
        _send(peer, 0x305)
        frame = await _next_frame(bus)
        assert frame == CanFrame(0x305, bytes(8), False)
        # No reader thread at all: the frames are handed to the loop as they are sent, so a close is at once.
        assert not _reader_threads(channel)
        await _assert_closes_at_once_without_a_reader(bus, channel)
    finally:
        peer.shutdown()
        await bus.close()


async def test_a_virtual_bus_takes_frames_from_other_threads_in_order_and_stops_at_bus_off() -> None:
    channel = channel_name()
    peer = can.Bus(interface="virtual", channel=channel)
    bus = CanBus(CanSettings(interface="virtual", channel=channel))
    try:
        bus.open()

        def send_from_a_thread() -> None:
            for index in range(50):
                peer.send(can.Message(arbitration_id=0x300 + index, data=bytes([index]), is_extended_id=False))
            peer.send(can.Message(arbitration_id=0x20, is_error_frame=True, data=bytes(8)))  # lost arbitration
            peer.send(can.Message(arbitration_id=0x40, is_error_frame=True, data=bytes(8)))  # bus-off
            peer.send(can.Message(arbitration_id=0x7FF, data=b"late", is_extended_id=False))

        sender = threading.Thread(target=send_from_a_thread)
        sender.start()
        await asyncio.to_thread(sender.join)
        received = []
        async with asyncio.timeout(2.0):
            for _ in range(50):
                received.append(await bus.receive())
            with pytest.raises(SinkError, match="bus-off"):
                await bus.receive()
        assert received == [CanFrame(0x300 + index, bytes([index]), False) for index in range(50)]
        assert bus.error_frames == 1
        # Nothing after the failure: the sink reopens the bus, as after the reader thread's end.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await bus.receive()
        assert not _reader_threads(channel)
    finally:
        peer.shutdown()
        await bus.close()


async def test_a_virtual_bus_closed_and_opened_again_receives_again() -> None:
    channel = channel_name()
    peer = can.Bus(interface="virtual", channel=channel)
    bus = CanBus(CanSettings(interface="virtual", channel=channel))
    try:
        for frame_id in (0x305, 0x306):
            bus.open()
            _send(peer, frame_id)
            assert await _next_frame(bus) == CanFrame(frame_id, bytes(8), False)
            await bus.close()
    finally:
        peer.shutdown()
        await bus.close()


async def test_receiving_on_a_virtual_bus_shut_down_meanwhile_is_a_sink_error() -> None:
    channel = channel_name()
    closed = can.Bus(interface="virtual", channel=channel)
    closed.shutdown()
    bus = CanBus(CanSettings(interface="virtual", channel=channel), lambda: closed)
    with pytest.raises(SinkError, match="cannot receive"):
        bus.open()
    await bus.close()


async def test_a_filtering_virtual_bus_receives_only_what_matches_and_closes_at_once() -> None:
    channel = channel_name()
    peer = can.Bus(interface="virtual", channel=channel)
    filtering = can.Bus(interface="virtual", channel=channel, can_filters=[{"can_id": 0x305, "can_mask": 0x7FF}])
    bus = CanBus(CanSettings(interface="virtual", channel=channel), lambda: filtering)
    try:
        bus.open()
        for frame_id in (0x351, 0x305, 0x356):
            _send(peer, frame_id)
        assert await _next_frame(bus) == CanFrame(0x305, bytes(8), False)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await bus.receive()
        await _assert_closes_at_once_without_a_reader(bus, channel)
    finally:
        peer.shutdown()
        await bus.close()


async def test_a_frame_waiting_on_the_virtual_bus_before_open_is_not_lost() -> None:
    channel = channel_name()
    peer = can.Bus(interface="virtual", channel=channel)
    factory_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    _send(peer, 0x305)  # queued in factory_bus
    bus = CanBus(CanSettings(interface="virtual", channel=channel), lambda: factory_bus)
    try:
        bus.open()
        assert await _next_frame(bus) == CanFrame(0x305, bytes(8), False)
        _send(peer, 0x306)
        assert await _next_frame(bus) == CanFrame(0x306, bytes(8), False)
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
            _send(peer, frame_id)
        assert bus.discard_received() == 3
        assert bus.discard_received() == 0
        # A filtering bus drops what does not match, uncounted: python-can's own receive path.
        channel_filtered = channel_name()
        filtered = CanBus(
            CanSettings(interface="virtual", channel=channel_filtered),
            lambda: can.Bus(
                interface="virtual", channel=channel_filtered, can_filters=[{"can_id": 0x351, "can_mask": 0x7FF}]
            ),
        )
        filtered.open(receive=False)
        sender = can.Bus(interface="virtual", channel=channel_filtered)
        for frame_id in (0x351, 0x355):
            _send(sender, frame_id)
        assert filtered.discard_received() == 1
        sender.shutdown()
        await filtered.close()
        assert bus._bus is not None
        bus._bus.shutdown()
        with pytest.raises(SinkError, match="closed bus"):
            bus.discard_received()
    finally:
        peer.shutdown()
        await bus.close()
    with pytest.raises(SinkError, match="not open"):
        bus.discard_received()


_FRAMES = [CanFrame(0x351, bytes([0x28, 0x02, 0xE8, 0x03, 0xE8, 0x03])), CanFrame(0x1806E5F4, bytes(8), True)]
_FIELDS = ("arbitration_id", "data", "is_extended_id", "dlc", "channel", "is_rx", "is_fd", "is_remote_frame")


def _drain(peer: can.BusABC) -> list[can.Message]:
    received = []
    while (message := peer.recv(0.0)) is not None:
        received.append(message)
    return received


@pytest.mark.parametrize("own", [False, True])
async def test_a_virtual_send_delivers_what_python_cans_own_send_delivers(own: bool) -> None:
    channel = channel_name()
    settings = CanSettings(interface="virtual", channel=channel)
    bus = CanBus(settings, lambda: can.Bus(interface="virtual", channel=channel, receive_own_messages=own))
    bus.open(receive=False)
    peers = [can.Bus(interface="virtual", channel=channel) for _ in range(2)]
    try:
        before = time.time()
        await bus.send(_FRAMES)
        fast = [_drain(peer) for peer in peers]
        assert bus._bus is not None
        own_fast = _drain(bus._bus)
        # python-can's own path: a message per frame, deep-copied for every receiver.
        messages = [
            can.Message(arbitration_id=f.arbitration_id, data=f.data, is_extended_id=f.is_extended_id) for f in _FRAMES
        ]
        bus._send_all(bus._bus, messages)
        plain = [_drain(peer) for peer in peers]
        own_plain = _drain(bus._bus)
        for got, expected in zip([*fast, own_fast], [*plain, own_plain], strict=True):
            assert len(got) == len(expected)
            for message, reference in zip(got, expected, strict=True):
                assert {f: getattr(message, f) for f in _FIELDS} == {f: getattr(reference, f) for f in _FIELDS}
                assert before <= message.timestamp <= reference.timestamp
        assert [len(received) for received in fast] == [len(_FRAMES)] * 2
        assert [m.is_rx for m in own_fast] == ([False] * len(_FRAMES) if own else [])
        # Each receiver has its own message: changing one changes neither the other nor what was sent.
        fast[0][0].data[0] = 0xFF
        assert fast[1][0].data[0] == 0x28 and _FRAMES[0].data[0] == 0x28
    finally:
        for peer in peers:
            peer.shutdown()
        await bus.close()


async def test_a_virtual_send_fails_as_python_can_does() -> None:
    channel = channel_name()
    bus = CanBus(CanSettings(interface="virtual", channel=channel, send_timeout=0.01))
    bus.open(receive=False)
    full = can.Bus(interface="virtual", channel=channel, rx_queue_size=1)
    try:
        with pytest.raises(SinkError, match="one or more recipients"):
            await bus.send(_FRAMES)
        assert len(_drain(full)) == 1
        assert bus._bus is not None
        bus._bus.shutdown()
        with pytest.raises(SinkError, match="closed bus"):
            await bus.send(_FRAMES)
    finally:
        full.shutdown()
        await bus.close()

"""The Transport contract's receive side: chunks, timeouts, a dropped link, a bounded buffer."""

from __future__ import annotations

import asyncio

import pytest

from bmsgate.errors import ConnectError, DeviceTimeout
from bmsgate.transports import base
from bmsgate.transports.base import Transport


class _Loopback(Transport):
    kind = "loopback"

    async def _do_open(self) -> None:
        pass

    async def _do_close(self) -> None:
        pass

    async def _do_write(self, data: bytes) -> None:
        asyncio.get_running_loop().call_soon(self._deliver, data)


async def test_a_chunk_arriving_while_waiting_is_returned() -> None:
    async with _Loopback() as transport:
        await transport.write(b"\x01\x02")
        assert await transport.receive(timeout=1.0) == b"\x01\x02"
        assert transport._readers == []


async def test_nothing_within_the_timeout_is_a_device_timeout_and_no_reader_is_left() -> None:
    loop = asyncio.get_running_loop()
    async with _Loopback() as transport:
        started = loop.time()
        with pytest.raises(DeviceTimeout, match=r"no data within 0\.1 s"):
            await transport.receive(timeout=0.1)
        assert 0.09 <= loop.time() - started < 0.5
        assert transport._readers == []
        await transport.write(b"late")
        assert await transport.receive(timeout=1.0) == b"late"


async def test_a_link_dropped_while_waiting_raises_at_once() -> None:
    async with _Loopback() as transport:
        reader = asyncio.create_task(transport.receive(timeout=5.0))
        await asyncio.sleep(0)
        transport._connection_lost()
        with pytest.raises(ConnectError, match="link dropped"):
            await reader
        with pytest.raises(ConnectError, match="not connected"):
            await transport.receive(timeout=5.0)


async def test_a_cancelled_receive_leaves_no_reader_and_loses_no_chunk() -> None:
    async with _Loopback() as transport:
        reader = asyncio.create_task(transport.receive(timeout=5.0))
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert transport._readers == []
        transport._deliver(b"kept")
        assert transport.receive_nowait() == b"kept"


async def test_an_unread_buffer_is_bounded_and_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_MAX_PENDING_CHUNKS", 3)
    async with _Loopback() as transport:
        for index in range(5):
            transport._deliver(bytes([index]))
        assert [await transport.receive(timeout=1.0) for _ in range(3)] == [b"\x02", b"\x03", b"\x04"]
        transport._deliver(b"x")
        assert transport.discard_pending() == 1
        assert transport.receive_nowait() is None


async def test_a_chunk_that_arrived_for_a_reader_cancelled_before_it_resumed_stays_buffered() -> None:
    async with _Loopback() as transport:
        reader = asyncio.create_task(transport.receive(timeout=5.0))
        await asyncio.sleep(0)
        transport._deliver(b"kept")  # wakes the reader...
        reader.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert transport.receive_nowait() == b"kept"


async def test_closing_wakes_a_reader_that_waits_without_a_timeout() -> None:
    transport = _Loopback()
    await transport.open()
    reader = asyncio.create_task(transport.receive())
    await asyncio.sleep(0)
    await transport.close()
    with pytest.raises(ConnectError, match="not connected"):
        async with asyncio.timeout(1.0):
            await reader


async def test_a_reader_woken_for_a_chunk_another_took_keeps_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    async with _Loopback() as transport:
        started = loop.time()
        first = asyncio.create_task(transport.receive(timeout=0.3))
        second = asyncio.create_task(transport.receive(timeout=0.3))
        await asyncio.sleep(0.2)
        transport._deliver(b"one")
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert sorted(type(result).__name__ for result in results) == ["DeviceTimeout", "bytes"]
        assert loop.time() - started < 0.45, "the losing reader's timeout started again"

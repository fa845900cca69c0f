"""Fair sharing of scarce connection slots (e.g. 8 batteries through a BLE adapter that holds 3 links).

Batteries that share an adapter take turns: acquire a slot, connect, read, disconnect, release. Waiters
are served strictly first come, first served, so no battery starves however many share the adapter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ConnectionSlots"]


class ConnectionSlots:
    """A FIFO-fair counting semaphore with usage statistics."""

    def __init__(self, limit: int, *, name: str = "slots") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.name = name
        self._in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.peak_in_use = 0
        self.grants = 0

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        """Wait for a slot (first come, first served)."""
        if self._in_use < self.limit and not self.waiting:
            self._grant()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # We were granted the slot just as we were cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back and wake the longest waiter."""
        if self._in_use <= 0:
            raise RuntimeError("release() without acquire()")
        self._in_use -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._grant()
                waiter.set_result(None)
                break

    def _grant(self) -> None:
        self._in_use += 1
        self.grants += 1
        self.peak_in_use = max(self.peak_in_use, self._in_use)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with slots.slot():`` holds one slot for the block."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

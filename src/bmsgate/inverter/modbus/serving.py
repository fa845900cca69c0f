"""Keeping a Modbus server listening: open it, reopen it with backoff when the port cannot be opened.

Shared by our TCP server (tcp.py) and pymodbus's RTU server (server.py), which differ only in how they open
and close a listener.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol, TypeVar

from bmsgate.errors import SinkError
from bmsgate.runtime.backoff import Backoff

__all__ = ["Listener", "serve_until_cancelled"]

_MAX_BACKOFF: Final = 30.0

_Handle = TypeVar("_Handle")


class Listener(Protocol[_Handle]):
    """What a Modbus server offers to be kept listening."""

    @property
    def endpoint(self) -> str:
        """Where it listens, for logs."""
        ...

    async def start(self) -> _Handle:
        """Open the listener once (raises SinkError when the port cannot be opened)."""
        ...

    async def stop(self, server: _Handle) -> None:
        """Close a listener `start` opened."""
        ...


async def serve_until_cancelled(listener: Listener[_Handle], slave_id: int, logger: logging.Logger) -> None:
    """Serve until cancelled; a port that cannot be opened is logged once (on `logger`) and retried with backoff."""
    backoff = Backoff(1.0, _MAX_BACKOFF, jitter=0.1)
    failing = False
    while True:
        try:
            server = await listener.start()
        except SinkError as exc:
            if not failing:
                logger.warning("Modbus server: %s; retrying", exc)
                failing = True
            await asyncio.sleep(backoff.next_delay())
            continue
        logger.info("Modbus server listening on %s (slave id %s)", listener.endpoint, slave_id)
        failing = False
        backoff.reset()
        try:
            await asyncio.Future()  # pymodbus relistens by itself after a dropped serial port
        finally:
            await listener.stop(server)

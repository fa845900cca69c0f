"""The dashboard's HTTP server never leaves its socket behind, even when its start is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from bmsgate.fleet.server.api.server import HttpServer
from bmsgate.mqtt.broker import free_port


async def _app(
    scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    """The least ASGI application: it only answers the lifespan's startup and shutdown."""
    if scope["type"] == "lifespan":
        for phase in ("startup", "shutdown"):
            await receive()
            await send({"type": f"lifespan.{phase}.complete"})


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_start_cancelled_midway_closes_the_listening_socket() -> None:
    port = free_port()
    server = HttpServer(_app, "127.0.0.1", port)
    start = asyncio.create_task(server.start())
    # Long enough for uvicorn to bind, not for the start to finish its first wait.
    for _ in range(200):
        await asyncio.sleep(0.005)
        if not _bindable(port):
            break
    start.cancel()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with contextlib.suppress(asyncio.CancelledError):
            await start
        gc.collect()
    assert _bindable(port), "the cancelled start left the port bound"

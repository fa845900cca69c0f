"""The fleet server's child processes (ingest workers, server processes): handing over settings, stopping.

A child reads its settings from standard input as one length-prefixed pickle written by its parent (both
ends are our own code in one installation, so pickling is not an attack surface; the child never reads a
pickle from anywhere else), and keeps reading standard input afterwards: end of file means the parent is
gone. A parent stops a child with SIGTERM, lets it finish what it is doing, and SIGKILLs it after a grace
period.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import struct
import sys
from typing import Any

__all__ = ["read_settings", "send_settings", "stop_child"]

_LENGTH = struct.Struct("!I")


async def send_settings(process: asyncio.subprocess.Process, settings: object) -> None:
    """Write `settings` to the child's standard input (it must have been started with a stdin pipe)."""
    assert process.stdin is not None
    told = pickle.dumps(settings)
    process.stdin.write(_LENGTH.pack(len(told)) + told)
    await process.stdin.drain()


async def read_settings() -> tuple[Any, asyncio.StreamReader]:
    """In the child: the settings its parent sent, and standard input to watch for the parent leaving."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    settings = pickle.loads(await reader.readexactly(length))  # noqa: S301 - written by our own parent
    return settings, reader


async def stop_child(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then wait for the child to stop in order (SIGKILL after `grace_s`)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(grace_s):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.stdin is not None:
        process.stdin.close()

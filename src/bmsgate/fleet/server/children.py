"""The fleet server's child processes (ingest workers, server processes): handing over settings, stopping.

A child reads its settings from standard input as one length-prefixed pickle written by its parent (both
ends are our own code in one installation, so pickling is not an attack surface; the child never reads a
pickle from anywhere else), and keeps reading standard input afterwards: end of file means the parent is
gone. A parent stops a child with SIGTERM, lets it finish what it is doing, and SIGKILLs it after a grace
period.

A parent that must know a child still works (not only that it lives) writes :data:`PROBE` bytes to its
standard input; the child answers each from its event loop (:func:`answer_probes`), so a child that is
stopped, deadlocked or stuck in a long call on its loop stops answering while its pid is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import struct
import sys
from collections.abc import Callable
from typing import Any, Final

__all__ = ["PROBE", "answer_probes", "probe", "read_settings", "send_settings", "stop_child"]

_LENGTH = struct.Struct("!I")
PROBE: Final = b"?"
"""One probe on a child's standard input (after its settings)."""


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


def probe(process: asyncio.subprocess.Process) -> None:
    """Ask the child for a sign of life (never blocks: a byte into a pipe a stopped child does not read)."""
    assert process.stdin is not None
    if not process.stdin.is_closing():
        process.stdin.write(PROBE)


async def answer_probes(reader: asyncio.StreamReader, answer: Callable[[], None]) -> None:
    """In the child: call `answer()` for each probe on standard input; returns when the parent is gone."""
    while chunk := await reader.read(256):
        for _ in range(chunk.count(PROBE)):
            answer()


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

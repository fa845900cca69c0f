"""Ingest worker processes for a test: started, connected, and stopped again whatever the test did."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bmsgate.fleet.server.ingest.workers import IngestWorkers


@contextlib.asynccontextmanager
async def running_workers(workers: IngestWorkers) -> AsyncIterator[IngestWorkers]:
    """Run `workers` until the block ends; enter once every worker is connected (30 s at most)."""
    task = asyncio.create_task(workers.run())
    try:
        async with asyncio.timeout(30):
            await workers.connected.wait()
        yield workers
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

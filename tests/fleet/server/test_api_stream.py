"""The live stream's coalescing and back-pressure, against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bmsgate.fleet.server.api.overview import OverviewCache
from bmsgate.fleet.server.api.sample_fleet import seed_fleet
from bmsgate.fleet.server.api.stream import LiveStream
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.store import StoreSettings, open_store


async def test_many_updates_of_one_gateway_become_one_message_and_a_slow_client_is_cut_off(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await seed_fleet(store, 3, now=time.time())
        feed = LiveFeed()
        stream = LiveStream(feed, store, OverviewCache(store), interval_s=0.05, client_queue=3)
        runner = asyncio.create_task(stream.run())
        await asyncio.sleep(0.05)
        with stream.connect() as client:
            for _ in range(100):
                feed.publish(LiveUpdate(kind=LiveKind.TELEMETRY, gateway="site-00001", at=time.time(), data={}))
            async with asyncio.timeout(3):
                first = json.loads(await client.queue.get())
            assert first["type"] == "gateway" and first["gateway"]["id"] == "site-00001"
            await asyncio.sleep(0.2)
            assert client.queue.empty()  # 100 telemetry updates, one message
            assert not client.overflowed.is_set()
            for gateway in ("site-00000", "site-00001", "site-00002", "gone"):
                feed.publish(LiveUpdate(kind=LiveKind.GATEWAY_DELETED, gateway=gateway, at=time.time(), data={}))
            async with asyncio.timeout(3):
                await client.overflowed.wait()  # 4 messages for a queue of 3: this client is closed
            assert client.queue.qsize() == 3
        assert stream.client_count == 0
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    finally:
        await store.close()


async def test_many_gateways_changing_at_once_become_one_message_naming_them(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await seed_fleet(store, 300, now=time.time(), templated=True)
        feed = LiveFeed()
        overview = OverviewCache(store)
        await overview.warm()
        stream = LiveStream(feed, store, overview, interval_s=0.1, client_queue=10, many_at_once=100)
        runner = asyncio.create_task(stream.run())
        await asyncio.sleep(0.05)
        with stream.connect() as client:
            changed = [f"site-{index:05d}" for index in range(250)]
            for gateway in changed:
                feed.publish(LiveUpdate(kind=LiveKind.TELEMETRY, gateway=gateway, at=time.time(), data={}))
            async with asyncio.timeout(3):
                named: set[str] = set()
                while len(named) < len(changed):
                    update = json.loads(await client.queue.get())
                    assert update["type"] == "gateways"
                    named |= set(update["ids"])
            assert named == set(changed)
            assert not client.overflowed.is_set()  # 250 changes, a handful of messages for a queue of 10
        assert overview.full_reads == 1  # the changed gateways were read by id, not the whole fleet again
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    finally:
        await store.close()

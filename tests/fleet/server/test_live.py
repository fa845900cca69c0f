"""The live feed: fan-out, per-gateway filter, bounded queues that drop the oldest and count it."""

from __future__ import annotations

import asyncio

import pytest

from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate


def _update(gateway: str, index: int) -> LiveUpdate:
    return LiveUpdate(kind=LiveKind.TELEMETRY, gateway=gateway, at=float(index), data={"i": index})


async def test_every_subscriber_gets_every_update_and_a_filter_works() -> None:
    feed = LiveFeed()
    async with feed.subscribe() as everything, feed.subscribe(gateway="gw-2") as one:
        assert feed.subscriber_count == 2
        for index in range(3):
            feed.publish(_update(f"gw-{index + 1}", index))
        assert [(await everything.get()).gateway for _ in range(3)] == ["gw-1", "gw-2", "gw-3"]
        assert (await one.get()).to_dict() == {"kind": "telemetry", "gateway": "gw-2", "at": 1.0, "data": {"i": 1}}
        assert one.pending() == 0
    assert feed.subscriber_count == 0
    assert feed.published == 3


async def test_a_slow_subscriber_loses_the_oldest_and_it_is_counted() -> None:
    feed = LiveFeed()
    async with feed.subscribe(maxsize=3) as slow:
        for index in range(10):
            feed.publish(_update("gw-1", index))
        assert slow.dropped == 7
        assert [(await slow.get()).data["i"] for _ in range(3)] == [7, 8, 9]


async def test_a_waiting_subscriber_wakes_up_and_close_ends_iteration() -> None:
    feed = LiveFeed()
    received: list[int] = []
    async with feed.subscribe() as subscription:

        async def consume() -> None:
            async for update in subscription:
                received.append(int(update.data["i"]))

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        feed.publish(_update("gw-1", 1))
        await asyncio.sleep(0.01)
        feed.close()
        await asyncio.wait_for(task, 1)
    assert received == [1]


async def test_a_queue_needs_room() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        async with LiveFeed().subscribe(maxsize=0):
            pass

"""Connection slots: never more than the limit, first come first served, no starvation."""

from __future__ import annotations

import asyncio
import collections

import pytest

from bmsgate.runtime.slots import ConnectionSlots


async def test_eight_batteries_through_three_slots_take_fair_turns() -> None:
    slots = ConnectionSlots(3)
    served: collections.Counter[str] = collections.Counter()
    order: list[str] = []
    concurrent = 0
    peak = 0

    async def battery(name: str) -> None:
        nonlocal concurrent, peak
        for _ in range(5):
            async with slots.slot():
                concurrent += 1
                peak = max(peak, concurrent)
                order.append(name)
                await asyncio.sleep(0.005)  # connect-read-disconnect
                served[name] += 1
                concurrent -= 1

    async with asyncio.TaskGroup() as group:
        for index in range(8):
            group.create_task(battery(f"b{index}"))
    assert peak == 3
    assert slots.peak_in_use == 3
    assert set(served.values()) == {5}
    # Fair: in every window of 8 consecutive grants, no battery appears twice before all appeared once.
    for start in range(0, len(order) - 8, 8):
        assert len(set(order[start : start + 8])) == 8


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    slots = ConnectionSlots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(), 1)
    assert slots.in_use == 1


def test_invalid_use() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionSlots(0)
    with pytest.raises(RuntimeError):
        ConnectionSlots(1).release()

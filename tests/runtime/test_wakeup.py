"""Wakeup: an event whose deadline ends a wait without cancelling the waiting task."""

from __future__ import annotations

import asyncio

import pytest

from bmsgate.runtime.wakeup import Wakeup


async def test_set_wakes_every_waiter_and_stays_set_until_cleared() -> None:
    wakeup = Wakeup()
    waiters = [asyncio.create_task(wakeup.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    wakeup.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert wakeup.is_set() and await wakeup.wait_until(0.0) is True
    wakeup.clear()
    assert not wakeup.is_set()


async def test_the_deadline_returns_false_without_cancelling_the_task() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    started = loop.time()
    assert await wakeup.wait_until(started + 0.05) is False
    assert loop.time() - started >= 0.04
    assert task.cancelling() == 0
    assert wakeup._waiters == []


async def test_a_deadline_already_past_still_yields_once() -> None:
    wakeup = Wakeup()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    asyncio.get_running_loop().call_soon(lambda: ran.append("callback"))
    other_task = asyncio.create_task(other())
    assert await wakeup.wait_until(asyncio.get_running_loop().time() - 1.0) is False
    assert "callback" in ran
    await other_task


async def test_set_and_cleared_before_the_waiter_runs_still_wakes_it() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait_until(asyncio.get_running_loop().time() + 5.0))
    await asyncio.sleep(0)
    wakeup.set()
    wakeup.clear()
    assert await waiter is True


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait_until(asyncio.get_running_loop().time() + 5.0))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert wakeup._waiters == []
    wakeup.set()  # no waiter left to wake: nothing raises

"""Poll rounds: outputs wait for the polls of their tick, never longer than the round's bound."""

from __future__ import annotations

import asyncio

import pytest

from bmsgate.runtime.rounds import ROUND_WAIT, PollRounds


async def _settled_after(rounds: PollRounds, battery_ids: set[str] | None = None) -> tuple[bool, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = await rounds.settled(battery_ids)
    return waited, loop.time() - started


async def test_nothing_waits_without_a_round() -> None:
    rounds = PollRounds()
    waited, took = await _settled_after(rounds)
    assert not waited and took < 0.05
    rounds.ended("a")  # a poll that never began: nothing to end, nothing breaks


async def test_a_round_is_over_when_its_last_poll_ended() -> None:
    rounds = PollRounds()
    rounds.began("a")
    rounds.began("b")
    waiter = asyncio.create_task(_settled_after(rounds))
    await asyncio.sleep(0.01)
    rounds.ended("a")
    await asyncio.sleep(0.01)
    assert not waiter.done(), "returned while b was still polling"
    rounds.ended("b")
    waited, took = await waiter
    assert waited and took < ROUND_WAIT


async def test_only_the_given_batteries_are_waited_for() -> None:
    rounds = PollRounds()
    rounds.began("outside")
    waited, took = await _settled_after(rounds, {"a"})
    assert not waited and took < 0.05
    rounds.began("a")
    waiter = asyncio.create_task(_settled_after(rounds, {"a"}))
    await asyncio.sleep(0.01)
    rounds.ended("a")
    waited, took = await waiter
    assert waited and took < ROUND_WAIT
    assert set(rounds.under_way()[0]) == {"outside"}


async def test_a_poll_slower_than_the_bound_is_not_waited_for_past_it() -> None:
    rounds = PollRounds()
    rounds.began("slow")
    waited, took = await _settled_after(rounds)
    assert waited
    assert ROUND_WAIT - 0.01 <= took < ROUND_WAIT + 0.1
    # Past the bound the poll no longer counts as this round: the next waiter goes ahead at once.
    waited, took = await _settled_after(rounds)
    assert not waited and took < 0.05
    rounds.ended("slow")


async def test_polls_due_at_the_callers_own_tick_are_part_of_its_round() -> None:
    # The waiter runs first in the pass its timer fired in, before the poller due at the same instant began.
    rounds = PollRounds()
    order: list[str] = []

    async def poller() -> None:
        rounds.began("a")
        order.append("began")
        for _ in range(3):  # a few passes of the loop, as a simulated poll's replies take
            await asyncio.sleep(0)
        order.append("published")
        rounds.ended("a")

    async def output() -> None:
        waited = await rounds.settled()
        order.append(f"output after the round: {waited}")

    output_task = asyncio.create_task(output())
    poller_task = asyncio.create_task(poller())
    await asyncio.gather(output_task, poller_task)
    assert order == ["began", "published", "output after the round: True"]


@pytest.mark.parametrize("cancelled", ["waiter", "poller"])
async def test_a_cancelled_wait_leaves_nothing_behind(cancelled: str) -> None:
    rounds = PollRounds()
    rounds.began("a")
    waiter = asyncio.create_task(rounds.settled())
    await asyncio.sleep(0.01)
    if cancelled == "waiter":
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert rounds._waiters == []
        rounds.ended("a")
    else:
        rounds.ended("a")
        assert await waiter is True
        assert rounds._waiters == []


async def test_a_slow_poll_holds_the_round_only_within_its_own_window() -> None:
    # A began well before B: once B is in, A's window (ROUND_WAIT from its own start) is what is left to wait.
    rounds = PollRounds()
    loop = asyncio.get_running_loop()
    rounds.began("a")
    await asyncio.sleep(ROUND_WAIT * 0.8)
    rounds.began("b")
    waiter = asyncio.create_task(_settled_after(rounds))
    await asyncio.sleep(0.01)
    rounds.ended("b")
    started = loop.time()
    waited, _took = await waiter
    assert waited
    assert loop.time() - started < ROUND_WAIT * 0.5, "held until b's window ended, not a's"
    rounds.ended("a")

"""Bounded cancellation: helpers that end promptly even around code that swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from bmsgate.runtime.cancellation import join, run_isolated, stop, uninterruptible


class SwallowsCancellation:
    """An awaitable that, like ``asyncio.wait_for`` on Python 3.11 when its result races the cancel,
    returns normally from the first `swallow` cancellations instead of raising them."""

    def __init__(self, result: str = "connected", *, swallow: int = 1, takes: float = 3600.0) -> None:
        self.result = result
        self.swallow = swallow
        self.takes = takes
        self.swallowed = 0
        self.finished = False

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.takes
        while True:
            try:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                if self.swallowed >= self.swallow:
                    raise
                self.swallowed += 1
                self.finished = True
                return self.result  # the cancellation is lost, the caller goes on "connected"
            self.finished = True
            return self.result


async def test_join_recancels_a_task_that_swallows_cancellation() -> None:
    swallowed = 0

    async def stubborn(times: int) -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed >= times:
                    raise
                swallowed += 1

    inner = asyncio.create_task(stubborn(3))
    outer = asyncio.create_task(join(inner, grace=0.05, limit=1.0))
    await asyncio.sleep(0.01)
    outer.cancel()
    done, _ = await asyncio.wait([outer], timeout=1.0)
    assert done
    assert outer.cancelled()
    assert inner.cancelled()
    assert swallowed == 3


async def test_join_gives_up_on_a_task_that_never_stops(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    inner = asyncio.create_task(immortal(), name="immortal")
    outer = asyncio.create_task(join(inner, grace=0.05, limit=0.3))
    await asyncio.sleep(0.01)
    outer.cancel()
    done, _ = await asyncio.wait([outer], timeout=1.0)
    assert done
    assert outer.cancelled()
    assert any("immortal ignored cancellation" in r.getMessage() for r in caplog.records)
    release.set()
    inner.cancel()
    await asyncio.wait([inner], timeout=1.0)
    assert inner.done()


async def test_join_returns_the_result_and_raises_the_error() -> None:
    async def answer() -> int:
        return 42

    async def fail() -> None:
        raise ValueError("boom")

    assert await join(asyncio.create_task(answer()), grace=0.1, limit=0.5) == 42
    with pytest.raises(ValueError, match="boom"):
        await join(asyncio.create_task(fail()), grace=0.1, limit=0.5)


async def test_stop_ends_a_task_that_swallows_the_first_cancel() -> None:
    fake = SwallowsCancellation(swallow=1)
    task = asyncio.create_task(fake.run())
    await asyncio.sleep(0)
    task.cancel()  # swallowed: the task ends normally, as if never cancelled
    assert await stop(task, grace=0.05, limit=0.5)
    assert fake.swallowed == 1
    assert task.done()


async def test_run_isolated_stops_within_its_limit_whatever_the_task_does() -> None:
    swallowed = 0

    async def swallow_twice() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1

    loop = asyncio.get_running_loop()
    outer = asyncio.create_task(run_isolated(swallow_twice(), name="isolated", grace=0.05, limit=0.5))
    await asyncio.sleep(0.01)
    started = loop.time()
    outer.cancel()
    done, _ = await asyncio.wait([outer], timeout=1.0)
    assert done
    assert outer.cancelled()
    assert loop.time() - started < 0.5
    assert swallowed == 2


async def test_uninterruptible_returns_the_result_when_not_cancelled() -> None:
    closed: list[str] = []

    async def close(result: str) -> None:
        closed.append(result)

    fake = SwallowsCancellation(takes=0.01)
    assert await uninterruptible(fake.run(), name="op", grace=0.1, on_abandoned=close) == "connected"
    assert closed == []


async def test_uninterruptible_propagates_the_error() -> None:
    async def refused() -> str:
        raise ConnectionRefusedError("nope")

    async def close(result: str) -> None:
        raise AssertionError("nothing to close")

    with pytest.raises(ConnectionRefusedError):
        await uninterruptible(refused(), name="op", grace=0.1, on_abandoned=close)


async def test_cancelled_caller_ends_within_grace_even_if_the_operation_swallows_the_cancel() -> None:
    """The caller is cancelled at once, the operation never is, and its late success is cleaned up."""
    closed: list[str] = []

    async def close(result: str) -> None:
        closed.append(result)

    fake = SwallowsCancellation(takes=0.05, swallow=1)
    loop = asyncio.get_running_loop()
    caller = asyncio.create_task(uninterruptible(fake.run(), name="op", grace=0.5, on_abandoned=close))
    await asyncio.sleep(0.01)
    started = loop.time()
    caller.cancel()
    done, _ = await asyncio.wait([caller], timeout=1.0)
    assert done
    assert caller.cancelled()
    assert loop.time() - started < 0.5
    assert fake.swallowed == 0  # the operation itself was never cancelled
    assert fake.finished
    assert closed == ["connected"]


async def test_an_operation_outlasting_the_grace_is_cleaned_up_in_the_background() -> None:
    closed: list[str] = []

    async def close(result: str) -> None:
        closed.append(result)

    fake = SwallowsCancellation(takes=0.3)
    loop = asyncio.get_running_loop()
    caller = asyncio.create_task(uninterruptible(fake.run(), name="slow-op", grace=0.05, on_abandoned=close))
    await asyncio.sleep(0.01)
    started = loop.time()
    caller.cancel()
    done, _ = await asyncio.wait([caller], timeout=1.0)
    assert done
    assert caller.cancelled()
    assert loop.time() - started < 0.2  # bounded by the grace, not by the operation
    assert closed == []
    async with asyncio.timeout(1.0):
        while not closed:
            await asyncio.sleep(0.01)
    assert closed == ["connected"]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("slow-op") and not t.done()]


async def test_cancelled_twice_while_waiting_out_the_grace_still_ends() -> None:
    closed: list[str] = []

    async def close(result: str) -> None:
        closed.append(result)

    fake = SwallowsCancellation(takes=0.2)
    caller = asyncio.create_task(uninterruptible(fake.run(), name="op", grace=1.0, on_abandoned=close))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()
    done, _ = await asyncio.wait([caller], timeout=0.5)
    assert done
    assert caller.cancelled()
    async with asyncio.timeout(1.0):
        while not closed:
            await asyncio.sleep(0.01)

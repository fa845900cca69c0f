"""What a wake-up of an idle gateway costs, and what the shared tick grid (runtime/cadence.py) saves.

1. An event loop that only sleeps, at several wake-up rates: the process's CPU per second divided by the
   wake-ups, i.e. the fixed price of leaving idle before any work is done.
2. Eight periodic tasks with 1 s periods doing the same small job each tick, the two ways alternately in one
   process: each sleeping its own ``asyncio.sleep(1)`` from its own start (the phases spread as tasks start
   and run), and each sleeping until the grid's next tick with ``sleep_until(tick_after(...))``. Printed:
   CPU per second for both, the loop's blocking waits per second for both, and the ratio.

Run: PYTHONPATH=src .venv/bin/python benchmarks/wake_ups.py [--seconds 10] [--tasks 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import selectors
import time

from bmsgate.runtime.cadence import sleep_until, tick_after

_PAYLOAD = json.dumps({"cells": [3.301 + i / 1000 for i in range(16)], "soc": 57.0, "current": -12.5})


def _job() -> None:
    # About what one output's tick does with a snapshot: a small JSON round trip.
    json.loads(_PAYLOAD)


class _Waits:
    """Counts the selector's blocking waits (a timeout other than zero): one wake-up from sleep each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        self._selector: selectors.BaseSelector = loop._selector  # type: ignore[attr-defined]
        self._original = self._selector.select
        self._selector.select = self._select

    def _select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout > 0:
            self.count += 1
        ready: list[tuple[selectors.SelectorKey, int]] = self._original(timeout)
        return ready

    def close(self) -> None:
        self._selector.select = self._original  # type: ignore[method-assign]


async def _idle(rate: float, seconds: float) -> float:
    """µs of CPU per wake-up of a loop that wakes `rate` times a second and does nothing."""
    loop = asyncio.get_running_loop()
    started_cpu, started = time.process_time(), loop.time()
    deadline = started
    while loop.time() - started < seconds:
        deadline += 1.0 / rate
        await sleep_until(deadline)
    cpu = time.process_time() - started_cpu
    return cpu / ((loop.time() - started) * rate) * 1e6


async def _own_timers(tasks: int, seconds: float) -> None:
    async def task(index: int) -> None:
        await asyncio.sleep(index * 0.9 / tasks)  # started one after another, as a gateway's outputs are
        while True:
            _job()
            await asyncio.sleep(1.0)

    await _run_for(tasks, seconds, task)


async def _on_grid(tasks: int, seconds: float) -> None:
    async def task(index: int) -> None:
        await asyncio.sleep(index * 0.9 / tasks)
        loop = asyncio.get_running_loop()
        while True:
            _job()
            await sleep_until(tick_after(loop.time(), 1.0))

    await _run_for(tasks, seconds, task)


async def _run_for(tasks: int, seconds: float, body: object) -> None:
    assert callable(body)
    running = [asyncio.create_task(body(index)) for index in range(tasks)]
    try:
        await asyncio.sleep(seconds)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _measure(kind: str, tasks: int, seconds: float) -> tuple[float, float]:
    """(CPU ms per second, blocking waits per second) over `seconds` after a 2 s settling period."""
    loop = asyncio.get_running_loop()
    runner = _own_timers if kind == "own" else _on_grid
    settle = asyncio.create_task(runner(tasks, seconds + 2.0))
    await asyncio.sleep(2.0)
    waits = _Waits(loop)
    started_cpu, started = time.process_time(), loop.time()
    await settle
    elapsed = loop.time() - started
    cpu = time.process_time() - started_cpu
    waits.close()
    return cpu / elapsed * 1000, waits.count / elapsed


async def _main(seconds: float, tasks: int) -> None:
    print("idle wake-ups (a loop that only sleeps):")
    for rate in (1.0, 5.0, 20.0):
        print(f"  {rate:4.0f} wake-ups/s: {await _idle(rate, seconds / 2):6.0f} µs of CPU each")
    print(f"{tasks} periodic tasks, 1 s period, a small job each tick, alternately {seconds:.0f} s each:")
    figures: dict[str, list[tuple[float, float]]] = {"own": [], "grid": []}
    for _ in range(2):
        for kind in ("own", "grid"):
            figures[kind].append(await _measure(kind, tasks, seconds))
    for kind, label in (("own", "own timers"), ("grid", "shared grid")):
        cpu = min(cpu for cpu, _ in figures[kind])
        waits = sum(w for _, w in figures[kind]) / len(figures[kind])
        print(f"  {label:12s}: {cpu:6.3f} ms CPU/s (best of 2), {waits:5.2f} blocking waits/s")
    own = min(cpu for cpu, _ in figures["own"])
    grid = min(cpu for cpu, _ in figures["grid"])
    print(f"  shared grid / own timers: {grid / own:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured per variant and round")
    parser.add_argument("--tasks", type=int, default=8, help="periodic tasks")
    args = parser.parse_args()
    asyncio.run(_main(args.seconds, args.tasks))


if __name__ == "__main__":
    main()

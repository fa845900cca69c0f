"""Shutdown: cancelling the sink or the embedded broker at any moment ends it promptly and leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bmsgate.homeassistant import HomeAssistantSink
from bmsgate.mqtt import broker as broker_module
from bmsgate.mqtt.broker import EmbeddedBroker, find_mosquitto
from bmsgate.mqtt.client import MqttSession
from bmsgate.runtime.hub import SnapshotHub
from tests.mosquitto import Mosquitto

from .conftest import BATTERY1, settings, snapshot

STOP_WITHIN = 2.0


def make_sink(broker: Mosquitto, tmp_path: Path) -> tuple[HomeAssistantSink, SnapshotHub]:
    hub = SnapshotHub()
    hub.publish(snapshot())
    return HomeAssistantSink(settings(broker.url, tmp_path), [BATTERY1]), hub


async def assert_stops(task: asyncio.Task[None]) -> None:
    """Cancel `task` (the sink) and require that it ends cancelled within STOP_WITHIN seconds."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=STOP_WITHIN)
    assert done, f"sink still running {STOP_WITHIN} s after cancellation: {task!r}"
    assert task.cancelled()


async def assert_nothing_left(timeout: float = 1.0) -> None:
    """No task of the sink (or an abandoned connect) outlives it for long."""
    current = asyncio.current_task()
    async with asyncio.timeout(timeout):
        while others := [t for t in asyncio.all_tasks() if t is not current and not t.done()]:
            await asyncio.wait(others, timeout=0.05)


def cancel_when(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, target: Callable[[], asyncio.Task[None] | None]
) -> None:
    """Make `owner.name` cancel the sink right after it was called (callbacks) or awaited (coroutines)."""
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):

        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            if (task := target()) is not None:
                task.cancel()
            return result

        monkeypatch.setattr(owner, name, wrapped_async)
    else:

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if (task := target()) is not None:
                task.cancel()
            return result

        monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        # the CONNACK and the cancellation arrive together: aiomqtt's asyncio.wait_for swallowed this one
        (aiomqtt.Client, "_on_connect"),
        (aiomqtt.Client, "_on_subscribe"),
        (aiomqtt.Client, "_on_publish"),
        (MqttSession, "subscribe"),
        (MqttSession, "publish"),
    ],
)
async def test_cancel_during_connect_and_serve_ends_promptly(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str
) -> None:
    pending: list[asyncio.Task[None]] = []  # the sink, until the hook has cancelled it once
    for _ in range(3):
        sink, hub = make_sink(broker, tmp_path)
        with monkeypatch.context() as patch:
            cancel_when(patch, owner, name, lambda: pending.pop() if pending else None)
            task = asyncio.create_task(sink.run(hub))
            pending.append(task)
            done, _ = await asyncio.wait([task], timeout=STOP_WITHIN)
            assert not pending
            assert done, f"cancellation in {name} was lost: {task!r}"
            assert task.cancelled()
        await assert_nothing_left()


async def test_cancel_at_any_moment_ends_promptly(broker: Mosquitto, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    phases: set[str] = set()
    # loop iterations first (connect, subscribe, sync, clean-up, first flush), then wall-clock delays
    points: list[tuple[str, float]] = [("steps", n) for n in range(0, 60, 2)]
    points += [("delay", d / 1000) for d in (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 80, 120)]
    for kind, amount in points:
        sink, hub = make_sink(broker, tmp_path)
        task = asyncio.create_task(sink.run(hub))
        if kind == "steps":
            for _ in range(int(amount)):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(amount)
        phases.add("served" if sink.connected.is_set() else "connected" if sink.stats.connects else "connecting")
        started = loop.time()
        await assert_stops(task)
        assert loop.time() - started < STOP_WITHIN
        await assert_nothing_left()
    assert {"connecting", "served"} <= phases


async def test_cancel_right_after_connected(broker: Mosquitto, tmp_path: Path) -> None:
    for _ in range(5):
        sink, hub = make_sink(broker, tmp_path)
        task = asyncio.create_task(sink.run(hub))
        await asyncio.wait_for(sink.connected.wait(), STOP_WITHIN)
        await assert_stops(task)
        await assert_nothing_left()


# -- embedded broker ----------------------------------------------------------------------------------

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Terminated but not reaped yet would still answer; the child watcher reaps it promptly.
    return False


class Spawned:
    """Records the processes EmbeddedBroker spawns (and their config directories)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.processes: list[tuple[asyncio.subprocess.Process, Path]] = []
        original = asyncio.create_subprocess_exec

        async def spawn(program: str, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
            process = await original(program, *args, **kwargs)
            self.processes.append((process, Path(args[args.index("-c") + 1]).parent))
            return process

        monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)

    async def assert_all_stopped(self) -> None:
        for process, directory in self.processes:
            async with asyncio.timeout(2.0):
                await process.wait()
                while not gone(process.pid):
                    await asyncio.sleep(0.01)
            assert process.returncode is not None
            assert not directory.exists(), f"{directory} left behind"


@needs_mosquitto
async def test_broker_cancelled_while_waiting_for_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = Spawned(monkeypatch)
    listening = asyncio.Event()

    async def never_listening(*args: Any) -> None:
        listening.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(broker_module, "_wait_listening", never_listening)
    broker = EmbeddedBroker(prefer="mosquitto")
    task = asyncio.create_task(broker.__aenter__())
    await asyncio.wait_for(listening.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(spawned.processes) == 1
    await spawned.assert_all_stopped()


@needs_mosquitto
async def test_broker_cancelled_at_any_moment_of_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = Spawned(monkeypatch)
    interrupted = 0
    for delay in (0, 0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.012, 0.02, 0.03, 0.05, 0.1):
        broker = EmbeddedBroker(prefer="mosquitto")
        task = asyncio.create_task(broker.start())
        if delay:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOP_WITHIN)
        assert done
        if task.cancelled():
            interrupted += 1
            assert broker._process is None
        else:
            task.result()  # started before the cancellation arrived: an ordinary stop
            await broker.stop()
        await spawned.assert_all_stopped()
    assert interrupted >= 3
    assert spawned.processes

"""State messages go at QoS 0 but for one acknowledged every few seconds; everything else at the configured QoS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from bmsgate.homeassistant import HomeAssistantSink
from bmsgate.homeassistant import sink as sink_module
from bmsgate.runtime.hub import SnapshotHub
from tests.mosquitto import Mosquitto

from .conftest import BATTERY1, TIMEOUT, running, settings, snapshot

STATE = "bmsgate/battery1/state"
AVAILABILITY = "bmsgate/battery1/availability"
CELL1_CONFIG = "homeassistant/sensor/bmsgate/battery1_cell_01/config"


@contextlib.asynccontextmanager
async def _qos_recorder(port: int) -> AsyncIterator[list[tuple[str, int]]]:
    """(topic, QoS) of every message, as delivered to a QoS 1 subscriber (the lower of the two QoS)."""
    seen: list[tuple[str, int]] = []
    ready = asyncio.Event()

    async def record() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="qos-recorder") as client:
            await client.subscribe("#", qos=1)
            ready.set()
            async for message in client.messages:
                seen.append((str(message.topic), int(message.qos)))

    task = asyncio.create_task(record())
    await asyncio.wait_for(ready.wait(), TIMEOUT)
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task


async def _states_published(seen: list[tuple[str, int]], hub: SnapshotHub, count: int) -> list[int]:
    """Publish `count` more snapshots one after the other; the QoS of every state message seen."""
    for _ in range(count):
        before = sum(1 for topic, _ in seen if topic == STATE)
        hub.publish(snapshot(timestamp=time.time()))
        async with asyncio.timeout(TIMEOUT):
            while sum(1 for topic, _ in seen if topic == STATE) == before:
                await asyncio.sleep(0.01)
    return [qos for topic, qos in seen if topic == STATE]


async def test_states_at_qos_0_but_the_first_of_a_session(broker: Mosquitto, tmp_path: Path) -> None:
    hub = SnapshotHub()
    hub.publish(snapshot(timestamp=time.time()))
    sink = HomeAssistantSink(settings(broker.url, tmp_path), [BATTERY1])
    async with _qos_recorder(broker.port) as seen, running(sink, hub):
        await asyncio.wait_for(sink.connected.wait(), TIMEOUT)
        states = await _states_published(seen, hub, 3)
    assert states == [1, 0, 0, 0]
    # Discovery and availability keep the configured QoS.
    assert (CELL1_CONFIG, 1) in seen
    assert (AVAILABILITY, 1) in seen


async def test_a_state_is_acknowledged_at_least_every_period(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "_ACKED_STATE_PERIOD", 0.0)
    hub = SnapshotHub()
    hub.publish(snapshot(timestamp=time.time()))
    sink = HomeAssistantSink(settings(broker.url, tmp_path), [BATTERY1])
    async with _qos_recorder(broker.port) as seen, running(sink, hub):
        await asyncio.wait_for(sink.connected.wait(), TIMEOUT)
        states = await _states_published(seen, hub, 2)
    assert states == [1, 1, 1]

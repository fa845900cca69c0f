"""Fixtures: real Mosquitto brokers on free ports, an MQTT recorder, sample snapshots and a sink runner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bmsgate.homeassistant import BatteryInfo, HomeAssistantSink, MqttSettings
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.mqtt.broker import find_mosquitto
from bmsgate.runtime.hub import SnapshotHub
from tests.mosquitto import Mosquitto

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
needs_passwd = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")

TIMEOUT = 10.0


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed")
    brokers: list[Mosquitto] = []

    def make(extra: str = "allow_anonymous true\n", **kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path, extra=extra, **kwargs)
        broker.start()
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Mosquitto]) -> Mosquitto:
    return make_broker()


class Recorder:
    """A client subscribed to everything, remembering messages and the latest payload per topic."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes, bool]] = []
        self.latest: dict[str, bytes] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Recorder:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        await asyncio.wait_for(ready.wait(), TIMEOUT)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task

    async def _run(self, ready: asyncio.Event) -> None:
        # Reconnects on its own, so it survives broker restarts in the tests.
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"rec-{uuid.uuid4().hex[:8]}") as client:
                    self._client = client
                    await client.subscribe("#", qos=1)
                    ready.set()
                    async for message in client.messages:
                        payload = bytes(message.payload)
                        async with self._changed:
                            self.messages.append((str(message.topic), payload, bool(message.retain)))
                            self.latest[str(message.topic)] = payload
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                self._client = None
                await asyncio.sleep(0.05)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_payload(self, topic: str, payload: bytes | str, timeout: float = TIMEOUT) -> None:
        expected = payload.encode() if isinstance(payload, str) else payload
        await self.wait_for(lambda: self.latest.get(topic) == expected, timeout)

    def json(self, topic: str) -> Any:
        return json.loads(self.latest[topic])

    def count(self, topic_prefix: str) -> int:
        return sum(1 for topic, _, _ in self.messages if topic.startswith(topic_prefix))


async def retained(port: int, topic_filter: str = "#", **client_kwargs: Any) -> dict[str, bytes]:
    """Every retained message under `topic_filter` (a fresh subscriber; stops at a sync echo)."""
    marker = f"test/sync/{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, **client_kwargs) as client:
        await client.subscribe([(topic_filter, 1), (marker, 1)])
        await client.publish(marker, "x", qos=1)
        async with asyncio.timeout(TIMEOUT):
            async for message in client.messages:
                if str(message.topic) == marker:
                    break
                if message.retain:
                    found[str(message.topic)] = bytes(message.payload)
    return {topic: payload for topic, payload in found.items() if payload}


def snapshot(battery_id: str = "battery1", *, timestamp: float | None = None, **changes: Any) -> BatterySnapshot:
    """A 4-cell JK-like snapshot with every field the sink can show."""
    fields: dict[str, Any] = {
        "battery_id": battery_id,
        "timestamp": time.time() if timestamp is None else timestamp,
        "protocol": "jk",
        "voltage": 13.28,
        "current": -4.5,
        "soc": 76.4,
        "soh": 98.0,
        "remaining_capacity": 213.9,
        "full_capacity": 280.0,
        "design_capacity": 280.0,
        "cycles": 42,
        "cell_voltages": (3.318, 3.322, 3.319, 3.321),
        "temperatures": (21.5, 22.25),
        "mosfet_temperature": 27.0,
        "alarms": frozenset({Alarm.LOW_SOC}),
        "charge_enabled": True,
        "discharge_enabled": True,
        "balancing_cells": (2,),
        "device": DeviceInfo(
            manufacturer="Jikong",
            model="BD4A17S4P",
            hardware_version="11.XW",
            software_version="11.26",
            serial_number="4021234567",
        ),
    }
    fields.update(changes)
    return BatterySnapshot(**fields)


def settings(url: str, tmp_path: Path, **changes: Any) -> MqttSettings:
    data: dict[str, Any] = {
        "url": url,
        "state_dir": str(tmp_path / "state"),
        "reconnect_initial": 0.05,
        "reconnect_max": 0.2,
    }
    data.update(changes)
    return MqttSettings.model_validate(data)


BATTERY1 = BatteryInfo("battery1", "Battery 1", "C8:47:8C:00:11:22", "jk")


@contextlib.asynccontextmanager
async def running(sink: HomeAssistantSink, hub: SnapshotHub) -> AsyncIterator[asyncio.Task[None]]:
    """Run the sink as a task for the duration of the block, then cancel it cleanly."""
    task = asyncio.create_task(sink.run(hub), name="sink-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def ca(tmp_path: Path) -> dict[str, Path]:
    """A throwaway CA plus a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path / "pki"
    d.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, env={**os.environ})

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=bmsgate test CA")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        extra = ["-extfile", "san.ext"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *extra)  # fmt: skip
    return {name: d / name for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}

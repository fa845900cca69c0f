"""Fixtures: a real Mosquitto with per-gateway password and ACL (like the fleet's), a server-side recorder,
snapshots, and an agent runner."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bmsgate.fleet.agent.agent import AgentOptions, FleetAgent
from bmsgate.fleet.agent.wiring import broker_settings
from bmsgate.fleet.credentials import GatewayCredentials, write_credentials
from bmsgate.fleet.protocol import Channel, FleetMessageError, GatewayMessage, decode
from bmsgate.model import Alarm, BatterySnapshot
from bmsgate.mqtt import client as mqtt
from bmsgate.mqtt.broker import find_mosquitto
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.runtime.hub import SnapshotHub
from tests.mosquitto import Mosquitto

MOSQUITTO = find_mosquitto()
TIMEOUT = 10.0
GATEWAYS = ("gw-1", "gw-2", "gw-3")
INGEST = "ingest"

_ACL = """\
pattern write fleet/v1/%u/availability
pattern write fleet/v1/%u/state
pattern write fleet/v1/%u/telemetry
pattern write fleet/v1/%u/event
pattern write fleet/v1/%u/reported
pattern read fleet/v1/%u/desired
pattern read fleet/v1/%u/command

user ingest
topic read fleet/v1/#
topic write fleet/v1/+/command
topic write fleet/v1/+/desired
"""


def password(user: str) -> str:
    """Each test user's password."""
    return f"secret-{user}"


class FleetBroker(Mosquitto):
    """Mosquitto with a password file and the fleet's per-gateway ACL; restartable on the same port."""

    def __init__(self, directory: Path, *, extra: str = "") -> None:
        passwords = directory / "passwd"
        passwords.write_text("", encoding="utf-8")
        for user in (*GATEWAYS, INGEST):
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password(user)], check=True)
        (directory / "acl").write_text(_ACL, encoding="utf-8")
        access = f"allow_anonymous false\npassword_file {passwords}\nacl_file {directory / 'acl'}\n"
        # Persistence keeps the recorder's session (its subscription and queued messages) across a restart,
        # as the fleet's own broker does for the server's ingest.
        super().__init__(directory, extra=access + extra, persistence=True)

    def credentials(self, gateway: str) -> GatewayCredentials:
        return GatewayCredentials(gateway=gateway, broker_url=self.url, username=gateway, password=password(gateway))  # type: ignore[arg-type]

    def write_credentials(self, gateway: str, path: Path) -> Path:
        write_credentials(self.credentials(gateway), path)
        return path

    def settings(self, user: str) -> BrokerSettings:
        return BrokerSettings.model_validate(
            {"url": self.url, "username": user, "password": password(user), "client_id": f"test-{user}"}
        )


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[FleetBroker]:
    """A running fleet broker (skips without mosquitto)."""
    if MOSQUITTO is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)")
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = FleetBroker(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Recorder:
    """The server's view: every fleet message, decoded (bad ones kept with their reason)."""

    def __init__(self, broker: FleetBroker) -> None:
        self.broker = broker
        self.messages: list[GatewayMessage] = []
        self.rejected: list[FleetMessageError] = []
        self.raw: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._session: mqtt.MqttSession | None = None

    async def __aenter__(self) -> Recorder:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        async with asyncio.timeout(TIMEOUT):
            await ready.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self, ready: asyncio.Event) -> None:
        while True:
            try:
                # A persistent session, like the server's ingest: what a gateway sends in the moment after a
                # broker restart, before this recorder is back, is queued for it rather than lost.
                async with mqtt.connect(
                    self.broker.settings(INGEST), will_topic="test/ingest", will_payload="gone", clean_session=False
                ) as session:
                    await session.subscribe("fleet/v1/#")
                    self._session = session
                    ready.set()
                    async for message in session.messages():
                        self.raw.append((message.topic, message.payload, message.retain))
                        try:
                            self.messages.append(decode(message.topic, message.payload))
                        except FleetMessageError as exc:
                            self.rejected.append(exc)
            except Exception:
                self._session = None
                await asyncio.sleep(0.1)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert self._session is not None
        await self._session.publish(topic, payload, retain=retain)

    def of(self, channel: Channel, gateway: str | None = None) -> list[Any]:
        return [
            message.message if message.message is not None else message
            for message in self.messages
            if message.channel is channel and (gateway is None or message.gateway == gateway)
        ]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)


@pytest.fixture
async def recorder(fleet_broker: FleetBroker) -> AsyncIterator[Recorder]:
    """A recorder subscribed to every gateway's channels."""
    async with Recorder(fleet_broker) as found:
        yield found


def snapshot(battery_id: str = "house", *, timestamp: float | None = None, **changes: Any) -> BatterySnapshot:
    """A 4-cell snapshot."""
    fields: dict[str, Any] = {
        "battery_id": battery_id,
        "timestamp": time.time() if timestamp is None else timestamp,
        "protocol": "jbd",
        "voltage": 13.28,
        "current": -4.5,
        "soc": 76.4,
        "cell_voltages": (3.318, 3.322, 3.319, 3.321),
        "temperatures": (21.5, 22.25),
        "alarms": frozenset(),
        "charge_enabled": True,
        "discharge_enabled": True,
    }
    fields.update(changes)
    return BatterySnapshot(**fields)


def agent_options(
    server: FleetBroker, directory: Path, gateway: str = "gw-1", *, reconnect_max: float = 0.3, **changes: Any
) -> AgentOptions:
    """Options for a fast agent (short interval, quick reconnects).

    Tests that restart the broker give a larger `reconnect_max`, so a reconnect happens in the backoff's
    usual range rather than within milliseconds of the restart.
    """
    settings = broker_settings(server.credentials(gateway), reconnect_max=reconnect_max)
    data: dict[str, Any] = {
        "gateway_id": gateway,
        "broker": settings,
        "buffer_path": directory / f"{gateway}-buffer.sqlite",
        "interval": 0.2,
        "packs": (),
        "hardware": "test bench",
    }
    data.update(changes)
    return AgentOptions(**data)


@contextlib.asynccontextmanager
async def running(agent: FleetAgent, hub: SnapshotHub) -> AsyncIterator[asyncio.Task[None]]:
    """Run the agent for the block, then cancel it cleanly."""
    task = asyncio.create_task(agent.run(hub), name="agent-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["Alarm", "FleetBroker", "Recorder", "agent_options", "running", "snapshot"]

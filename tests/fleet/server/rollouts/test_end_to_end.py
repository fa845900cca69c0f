"""Rollouts through ``fleet serve``'s composition: the server's own Mosquitto (TLS, per-gateway ACLs), SQLite,
ingest, API; two gateways enrolled like a user would, each a plain MQTT client on its own credentials that
reports its state, takes its desired state and answers (standing for the agent's update side)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bmsgate.errors import SinkError
from bmsgate.fleet.agent.wiring import broker_settings
from bmsgate.fleet.credentials import GatewayCredentials
from bmsgate.fleet.protocol import Channel, StateMessage, encode, topic
from bmsgate.fleet.server.broker import apply_device_changes
from bmsgate.fleet.server.devices import enroll_gateway
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.fleet.updates import DesiredEnvelope, UpdatePhase, decode_desired
from bmsgate.mqtt.broker import find_mosquitto, free_port
from bmsgate.mqtt.client import connect
from tests.fleet.server.rollouts.helpers import PACK, report, unsigned_envelope

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _gateway(credentials: GatewayCredentials, received: list[DesiredEnvelope]) -> AsyncIterator[None]:
    """A gateway on its own credentials: announces itself, then commits every desired state it gets."""
    gateway = credentials.gateway
    ready = asyncio.Event()

    async def run() -> None:
        settings = broker_settings(credentials)
        async with connect(
            settings, will_topic=topic(gateway, Channel.AVAILABILITY), will_payload="offline"
        ) as session:
            await session.subscribe(topic(gateway, Channel.DESIRED))
            state = StateMessage(
                v=1,
                gateway=gateway,
                sent_at=time.time(),
                software_version="1.0.0",
                hardware="rpi4",
                uptime_s=1.0,
                interval_s=10.0,
            )
            await session.publish(topic(gateway, Channel.STATE), encode(state), retain=True)
            await session.publish(topic(gateway, Channel.AVAILABILITY), "online", retain=True)
            ready.set()
            async for message in session.messages():
                envelope = decode_desired(message.payload, topic=message.topic, gateway=gateway)
                received.append(envelope)
                answer = report(
                    gateway,
                    UpdatePhase.COMMITTED,
                    generation=envelope.signed.generation,
                    rollout=envelope.signed.rollout,
                    at=time.time(),
                )
                await session.publish(topic(gateway, Channel.REPORTED), answer.model_dump_json(), retain=True)

    task = asyncio.create_task(run())
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({task, waiting}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # its failure, with the reason
        assert ready.is_set(), f"{gateway} did not connect"
        yield
    finally:
        for pending in (task, waiting):
            pending.cancel()
        await asyncio.gather(task, waiting, return_exceptions=True)


async def test_a_rollout_through_the_fleet_broker_reaches_each_gateway_and_completes(tmp_path: Path) -> None:
    gateway_port = free_port()
    settings = FleetServerSettings(
        data_dir=tmp_path / "fleet", http_port=0, gateway_port=gateway_port, cert_port=None, public_host="localhost"
    )
    async with FleetServer(settings, sign_desired=unsigned_envelope) as running:
        url = f"mqtts://localhost:{gateway_port}"
        credentials = [enroll_gateway(running.data, name, broker_url=url) for name in ("site-a", "site-b")]
        assert await apply_device_changes(running.data)
        received: dict[str, list[DesiredEnvelope]] = {item.gateway: [] for item in credentials}
        async with (
            _gateway(credentials[0], received["site-a"]),
            _gateway(credentials[1], received["site-b"]),
            httpx.AsyncClient(
                base_url=running.url, headers={"Authorization": f"Bearer {running.admin_token}"}, timeout=10
            ) as client,
        ):

            async def registered() -> bool:
                rows = (await client.get("/api/v1/gateways")).json()["gateways"]
                return sorted(row["id"] for row in rows if row["online"]) == ["site-a", "site-b"]

            await _until(registered)
            body = {"name": "maps", "target": {"packs": [PACK.model_dump(mode="json")]}, "options": {"jitter_s": 0}}
            created = await client.post("/api/v1/rollouts", json=body)
            assert created.status_code == 201, created.text
            rollout_id = created.json()["id"]

            async def completed() -> dict[str, Any] | None:
                shown = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
                return shown if shown["state"] == "completed" else None

            shown = await _until(completed)
        assert shown["succeeded"] == 2
        for gateway, envelopes in received.items():
            assert [(e.signed.gateway, e.signed.rollout, e.signed.generation) for e in envelopes] == [
                (gateway, rollout_id, 1)
            ]
            assert envelopes[0].signed.packs == (PACK,)

        # A gateway cannot write its own desired state: the broker drops the forgery, the server's stays retained.
        forged = unsigned_envelope(received["site-a"][0].signed.model_copy(update={"generation": 99}))
        settings_a = broker_settings(credentials[0])
        # Mosquitto may drop the session over the refused publish instead of acknowledging it: either is a refusal.
        with contextlib.suppress(SinkError):
            will = topic("site-a", Channel.AVAILABILITY)
            async with connect(settings_a, will_topic=will, will_payload="offline") as gw:
                await gw.publish(topic("site-a", Channel.DESIRED), forged.model_dump_json(), retain=True)
        retained: list[DesiredEnvelope] = []
        async with _gateway(credentials[0], retained):
            await _until(lambda: _true_if(retained), timeout=10)
        assert [envelope.signed.generation for envelope in retained] == [1]
        assert not running.failure.done()


async def _true_if(items: list[DesiredEnvelope]) -> bool:
    return bool(items)

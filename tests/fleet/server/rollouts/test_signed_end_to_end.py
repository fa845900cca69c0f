"""A rollout signed for real: the key ceremony through the CLI, ``fleet serve`` signing desired states with its
online timestamp key, a gateway on its enrolment credentials verifying each one against its TUF root and
fetching the artifact over the server's HTTPS listener before it answers ``committed``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bmsgate.app.cli.main import main
from bmsgate.catalog import BUILTIN_DIR
from bmsgate.fleet.agent.wiring import broker_settings
from bmsgate.fleet.credentials import GatewayCredentials, read_credentials
from bmsgate.fleet.protocol import Channel, StateMessage, encode, topic
from bmsgate.fleet.server.auth import Role
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.fleet.updates import DesiredState, FailureReason, UpdatePhase, decode_desired
from bmsgate.mqtt.broker import find_mosquitto, free_port
from bmsgate.mqtt.client import connect
from bmsgate.packs.errors import PackError
from bmsgate.packs.trust import TrustedRepository
from tests.fleet.server.rollouts.helpers import report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]


def _cli(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


def _ceremony(tmp_path: Path, keys: Path, data: Path) -> Path:
    """Build a one-register-map pack, make the keys, initialise the server's repository, sign and publish."""
    source = tmp_path / "demo-src"
    (source / "modbus").mkdir(parents=True)
    text = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")
    (source / "modbus" / "site.yaml").write_text(text.replace("name: generic", "name: site", 1), encoding="utf-8")
    (source / "pack.yaml").write_text('name: demo\nversion: "1.0"\nhardware: ["*"]\n', encoding="utf-8")
    artifact = tmp_path / "demo-1.0.pack.json"
    assert _cli("pack", "build", source, "--out", artifact) == 0
    assert _cli("pack", "keygen", "--keys", keys) == 0
    assert (
        _cli("fleet", "pack", "init", "--root", keys / "root.json", "--online-keys", keys / "online", "--data", data)
        == 0
    )
    assert _cli("pack", "sign", artifact, "--keys", keys, "--out", tmp_path / "targets.json") == 0
    assert _cli("fleet", "pack", "publish", "--targets", tmp_path / "targets.json", artifact, "--data", data) == 0
    return artifact


@contextlib.asynccontextmanager
async def _verifying_gateway(
    credentials: GatewayCredentials, trusted: TrustedRepository, taken: list[DesiredState]
) -> AsyncIterator[None]:
    """A gateway that verifies each desired state, downloads its packs, and answers committed (or failed)."""
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
                phase, reason = UpdatePhase.COMMITTED, None
                try:
                    desired = await asyncio.to_thread(trusted.verify_desired, envelope)
                    for pack in desired.packs:
                        await asyncio.to_thread(
                            functools.partial(trusted.download, pack.target, length=pack.length, sha256=pack.sha256)
                        )
                    taken.append(desired)
                except PackError as exc:
                    phase, reason = UpdatePhase.FAILED, exc.reason if isinstance(exc.reason, FailureReason) else None
                answer = report(
                    gateway,
                    phase,
                    generation=envelope.signed.generation,
                    rollout=envelope.signed.rollout,
                    at=time.time(),
                    reason=reason,
                )
                await session.publish(topic(gateway, Channel.REPORTED), answer.model_dump_json(), retain=True)

    task = asyncio.create_task(run())
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({task, waiting}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert ready.is_set(), f"{gateway} did not connect"
        yield
    finally:
        for pending in (task, waiting):
            pending.cancel()
        await asyncio.gather(task, waiting, return_exceptions=True)


async def test_a_signed_rollout_is_verified_and_fetched_by_the_gateway(tmp_path: Path) -> None:
    keys, data = tmp_path / "keys", tmp_path / "data"
    settings = FleetServerSettings(
        data_dir=data,
        http_port=0,
        gateway_port=free_port(),
        cert_port=None,
        public_host="localhost",
        gateway_host="127.0.0.1",
        artifacts_port=0,
    )
    # Before the ceremony the server cannot sign: a rollout is refused, saying why.
    async with FleetServer(settings) as running:
        headers = {"Authorization": f"Bearer {running.admin_token}"}
        async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=10) as client:
            body = {
                "target": {"software": {"version": "2.0", "target": "software/x.whl", "length": 1, "sha256": "a" * 64}}
            }
            refused = await client.post("/api/v1/rollouts", json=body)
        assert refused.status_code == 400 and "no root yet" in refused.text

    artifact = await asyncio.to_thread(_ceremony, tmp_path, keys, data)
    content = artifact.read_bytes()
    async with FleetServer(settings) as running:
        credentials_file = tmp_path / "gw1.credentials.json"
        assert await asyncio.to_thread(_cli, "fleet", "enroll", "gw1", "--data", data, "--out", credentials_file) == 0
        credentials = read_credentials(credentials_file)
        assert credentials.artifacts_url is not None and credentials.tuf_root is not None
        trusted = await asyncio.to_thread(
            TrustedRepository,
            tmp_path / "gw1" / "metadata",
            tmp_path / "gw1" / "artifacts",
            credentials.artifacts_url,
            ca_pem=credentials.ca_pem,
            bootstrap_root=credentials.tuf_root.encode(),
        )
        taken: list[DesiredState] = []
        # The admin token is shown at the first start only; this is a second start of the same data directory.
        headers = {"Authorization": f"Bearer {running.data.tokens.create(Role.TECHNICIAN, 'release')}"}
        async with (
            _verifying_gateway(credentials, trusted, taken),
            httpx.AsyncClient(base_url=running.url, headers=headers, timeout=10) as client,
        ):

            async def registered() -> bool:
                rows = (await client.get("/api/v1/gateways")).json()["gateways"]
                return any(row["id"] == "gw1" and row["online"] for row in rows)

            await _until(registered)
            pack = {
                "pack": "demo",
                "version": "1.0",
                "target": "packs/demo-1.0.pack.json",
                "length": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
            created = await client.post(
                "/api/v1/rollouts", json={"name": "demo 1.0", "target": {"packs": [pack]}, "options": {"jitter_s": 0}}
            )
            assert created.status_code == 201, created.text
            rollout_id = created.json()["id"]

            async def completed() -> dict[str, Any] | None:
                shown = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
                return shown if shown["state"] in ("completed", "stopped") else None

            shown = await _until(completed)
        assert (shown["state"], shown["succeeded"]) == ("completed", 1), shown
        (state,) = taken
        assert (state.gateway, state.rollout, state.generation, state.packs[0].target) == (
            "gw1",
            rollout_id,
            1,
            "packs/demo-1.0.pack.json",
        )

"""Ingest in worker processes: they share the load, a killed one loses nothing, the live feed still sees it all.

Real worker processes, a real Mosquitto (persistent, shared subscriptions) and a real SQLite store; the
last test runs ``fleet serve``'s composition with two workers behind its own broker (TLS, ACLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsgate.fleet.protocol import Channel, encode, topic
from bmsgate.fleet.server.ingest import IngestSettings, IngestWorkers
from bmsgate.fleet.server.ingest.workers import WorkerError, decode_batch_frame, encode_frame
from bmsgate.fleet.server.live import LiveFeed, LiveKind
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch, Resolution, WriteResult
from bmsgate.mqtt.client import MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings
from tests.fleet.server.running_workers import running_workers
from tests.fleet.server.store.messages import telemetry
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.slow  # worker processes take a second or two to start

T0 = float(int(time.time()) - 3600)
_GATEWAYS = [f"gw-{index}" for index in range(8)]


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _publisher(broker: Mosquitto) -> AsyncIterator[MqttSession]:
    settings = BrokerSettings(url=broker.url)
    async with connect(settings, will_topic="test/publisher", will_payload="gone", client_id="test-pub") as session:
        yield session


async def _publish(session: MqttSession, count: int, *, first: int = 0) -> None:
    for index in range(first, first + count):
        gateway = _GATEWAYS[index % len(_GATEWAYS)]
        message = telemetry(gateway, at=T0 + index, seq=index)
        await session.publish(topic(gateway, Channel.TELEMETRY), encode(message), retain=False)


async def _stored(store: Repository) -> int:
    total = 0
    for gateway in _GATEWAYS:
        with contextlib.suppress(Exception):  # not there yet
            series = await store.series(gateway, "b1", "soc", T0 - 1, T0 + 86400, Resolution.RAW, limit=100_000)
            total += len(series.points)
    return total


@pytest.fixture
async def store_settings(tmp_path: Path) -> StoreSettings:
    settings = StoreSettings(data_dir=tmp_path / "data")
    store = await open_store(settings)  # migrated once, as the server does before it starts workers
    await store.close()
    return settings


def test_a_batch_frame_carries_its_messages_and_result() -> None:
    messages = [("fleet/v1/gw-1/telemetry", b'{"v":1}', False, 1.5), ("fleet/v1/gw-2/state", b"", True, 2.0)]
    result = WriteResult(
        samples_written=3, samples_duplicate=1, events_written=0, events_duplicate=2, snapshots_rejected=1
    )
    frame = encode_frame(messages, result)
    assert decode_batch_frame(frame[5:]) == (messages, result)
    for cut in (3, 30, len(frame) - 1):
        with pytest.raises(WorkerError):
            decode_batch_frame(frame[5:cut])


@pytest.mark.parametrize("seed", [b"", b"\x00" * 44])
@given(noise=st.binary(max_size=200))
def test_any_bytes_are_a_batch_or_a_worker_error(seed: bytes, noise: bytes) -> None:
    try:
        messages, _ = decode_batch_frame(seed + noise)
    except WorkerError:
        return
    assert all(isinstance(topic_name, str) for topic_name, *_ in messages)


async def test_workers_share_the_load_and_store_everything(mosquitto: Mosquitto, store_settings: StoreSettings) -> None:
    workers = IngestWorkers(
        store_settings, BrokerSettings(url=mosquitto.url), workers=2, settings=IngestSettings(max_delay_s=0.05)
    )
    store = await open_store(store_settings)
    try:
        async with running_workers(workers), _publisher(mosquitto) as publisher:
            await _publish(publisher, 200)

            async def everything() -> bool:
                return await _stored(store) == 200

            await _eventually(everything)

            async def both_reported() -> bool:
                stored = [report.get("stored", {}).get("telemetry", 0) for report in workers.reports.values()]
                return len(stored) == 2 and sum(stored) == 200

            await _eventually(both_reported)
            shares = [report["stored"]["telemetry"] for report in workers.reports.values()]
            assert min(shares) > 0, shares  # the broker split the shared subscription between them
            assert workers.counters.samples_written == 200
    finally:
        await store.close()


async def test_a_killed_worker_loses_nothing_it_acknowledged(
    mosquitto: Mosquitto, store_settings: StoreSettings
) -> None:
    # Slow batches: the worker holds its share received but not yet committed (so not acknowledged) when killed.
    workers = IngestWorkers(
        store_settings, BrokerSettings(url=mosquitto.url), workers=2, settings=IngestSettings(max_delay_s=2.0)
    )
    store = await open_store(store_settings)
    try:
        async with running_workers(workers), _publisher(mosquitto) as publisher:
            await _publish(publisher, 150)
            await asyncio.sleep(0.5)  # delivered to both workers, committed by neither
            assert await _stored(store) == 0
            os.kill(workers.pids[1], signal.SIGKILL)
            await _publish(publisher, 150, first=150)

            async def everything() -> bool:
                return await _stored(store) == 300

            await _eventually(everything)
            assert workers.restarts >= 1
    finally:
        await store.close()


class _Observer:
    def __init__(self) -> None:
        self.telemetry = 0

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        self.telemetry += len(batch.telemetry)


async def test_the_live_feed_and_the_observers_see_what_the_workers_store(
    mosquitto: Mosquitto, store_settings: StoreSettings
) -> None:
    feed = LiveFeed()
    observer = _Observer()
    workers = IngestWorkers(
        store_settings,
        BrokerSettings(url=mosquitto.url),
        workers=2,
        feed=feed,
        observers=[observer],
        settings=IngestSettings(max_delay_s=0.05),
    )
    async with running_workers(workers), feed.subscribe() as subscription, _publisher(mosquitto) as publisher:
        await _publish(publisher, 40)
        seen: set[float] = set()
        async with asyncio.timeout(30):
            while len(seen) < 40:
                update = await subscription.get()
                if update.kind is LiveKind.TELEMETRY:
                    seen.add(update.at)
                    snapshot = update.data["batteries"]["b1"]["snapshot"]
                    assert snapshot["cell_count"] == len(snapshot["cell_voltages"])  # the full form
        assert observer.telemetry == 40


async def test_fleet_serve_with_two_ingest_workers(tmp_path: Path) -> None:
    from bmsgate.fleet.agent.simulated import SimulatedSite, build_site
    from bmsgate.fleet.server.broker import apply_device_changes
    from bmsgate.fleet.server.devices import enroll_gateway
    from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
    from bmsgate.mqtt.broker import free_port

    gateway_port = free_port()
    settings = FleetServerSettings(
        data_dir=tmp_path / "fleet",
        http_port=0,
        gateway_port=gateway_port,
        cert_port=None,
        public_host="localhost",
        ingest_workers=2,
    )
    async with FleetServer(settings) as running:
        assert isinstance(running.ingest, IngestWorkers)
        credentials = enroll_gateway(running.data, "two-workers", broker_url=f"mqtts://localhost:{gateway_port}")
        assert await apply_device_changes(running.data)
        site = SimulatedSite(gateway_id="two-workers", name="Durban 1", lat=-29.86, lon=31.02, packs=2, cells=8)
        supervisor, _agent = build_site(site, credentials, tmp_path / "gw", interval=0.5, poll_interval=0.2)
        gateway_task = asyncio.create_task(supervisor.run())
        headers = {"Authorization": f"Bearer {running.admin_token}"}
        try:
            async with (
                httpx.AsyncClient(base_url=running.url, headers=headers, timeout=10) as client,
                running.feed.subscribe(gateway="two-workers") as live,
            ):

                async def shown() -> bool:
                    response = await client.get("/api/v1/gateways/two-workers")
                    if response.status_code != 200:
                        return False
                    row: dict[str, Any] = response.json()
                    return bool(row["online"] and row["software_version"] and all(row["batteries"]))

                await _eventually(shown)
                async with asyncio.timeout(20):
                    while (await live.get()).kind is not LiveKind.TELEMETRY:
                        pass

                async def counted() -> bool:
                    return running.ingest.counters.samples_written > 0

                await _eventually(counted)
                assert not running.ingest.counters.rejected
        finally:
            gateway_task.cancel()
            await asyncio.gather(gateway_task, return_exceptions=True)
        assert not running.failure.done()


def test_the_number_of_workers_is_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from pydantic import ValidationError

    from bmsgate.app.cli.main import main
    from bmsgate.fleet.server.service import FleetServerSettings

    with pytest.raises(SystemExit) as exited:
        main(["fleet", "serve", "--ingest-workers", "0"])
    assert exited.value.code == 2
    assert "--ingest-workers" in capsys.readouterr().err
    assert FleetServerSettings().ingest_workers == 1
    with pytest.raises(ValidationError):
        FleetServerSettings(ingest_workers=0)
    with pytest.raises(ValueError, match="at least one"):
        IngestWorkers(StoreSettings(data_dir=tmp_path), BrokerSettings(url="mqtt://127.0.0.1:1"), workers=0)

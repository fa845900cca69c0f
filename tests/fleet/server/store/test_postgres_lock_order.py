"""Concurrent PostgreSQL writers lock gateway rows in one order across a whole batch (no deadlock)."""

from __future__ import annotations

import asyncio

import psycopg

from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.repository import Availability, IngestBatch

from .messages import T0, state, telemetry


async def test_a_batch_touching_gateways_in_several_statements_takes_their_rows_in_id_order(
    postgres_url: str,
) -> None:
    store = await open_store(StoreSettings(postgres_url=postgres_url))
    try:
        seed = IngestBatch(availability=[("gw-1", Availability.ONLINE, T0), ("gw-2", Availability.ONLINE, T0)])
        await store.write_batch(seed)
        # One batch: a state of gw-2 and an availability of gw-1 (two statements, each in id order by
        # itself). Another writer (here by hand) holds gw-1 and next wants gw-2, as a writer in id order does.
        batch = IngestBatch(states=[(state("gw-2", sent_at=T0 + 1), T0 + 1)])
        batch.availability.append(("gw-1", Availability.OFFLINE, T0 + 1))
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute("UPDATE gateways SET last_seen = last_seen WHERE id = 'gw-1'")
            writing = asyncio.create_task(store.write_batch(batch))
            await asyncio.sleep(0.5)  # the batch now waits for gw-1 (and must not hold gw-2 meanwhile)
            await other.execute("SET statement_timeout = '5s'")
            # Before the fix: PostgreSQL found a deadlock here (after deadlock_timeout) and aborted one side.
            await other.execute("UPDATE gateways SET last_seen = last_seen WHERE id = 'gw-2'")
            await other.commit()
        await asyncio.wait_for(writing, 10)
        record = await store.get_gateway("gw-1")
        assert not record.online
    finally:
        await store.close()


async def test_a_batch_writes_its_samples_before_it_waits_for_gateway_rows(postgres_url: str) -> None:
    # Several ingest workers update the same gateway rows; whoever holds them makes the others wait until
    # its commit. The samples lock no shared row, so they go first and the wait covers only the upserts.
    store = await open_store(StoreSettings(postgres_url=postgres_url))
    try:
        seed = IngestBatch(availability=[("gw-1", Availability.ONLINE, T0), ("gw-2", Availability.ONLINE, T0)])
        await store.write_batch(seed)
        batch = IngestBatch(telemetry=[(telemetry("gw-1", T0 + 1), T0 + 1), (telemetry("gw-2", T0 + 1), T0 + 1)])
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute("UPDATE gateways SET last_seen = last_seen WHERE id = 'gw-1'")  # held
            writing = asyncio.create_task(store.write_batch(batch))
            await asyncio.sleep(0.5)
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as observer:
                cursor = await observer.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname LIKE 'samples_day_%%' AND l.mode = 'RowExclusiveLock' AND l.granted "
                    "AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock')"
                )
                row = await cursor.fetchone()
            await other.rollback()
        await asyncio.wait_for(writing, 10)
        assert row is not None
        assert row[0] >= 1, "the waiting batch had not written its samples yet"
    finally:
        await store.close()


async def test_a_batch_takes_new_gateway_rows_in_id_order_too(postgres_url: str) -> None:
    # A new fleet: no gateway row exists yet. The other writer (by hand) inserts gw-1 and next gw-2, as a
    # writer in id order does; the batch's state of gw-2 must not take gw-2 before it has gw-1.
    store = await open_store(StoreSettings(postgres_url=postgres_url))
    try:
        batch = IngestBatch(states=[(state("gw-2", sent_at=T0 + 1), T0 + 1)])
        batch.availability.append(("gw-1", Availability.ONLINE, T0 + 1))
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute("INSERT INTO gateways (id) VALUES ('gw-1')")
            writing = asyncio.create_task(store.write_batch(batch))
            await asyncio.sleep(0.5)  # the batch now waits for gw-1
            await other.execute("SET statement_timeout = '5s'")
            # Before the fix: the batch had inserted gw-2 already; PostgreSQL found a deadlock here.
            await other.execute("INSERT INTO gateways (id) VALUES ('gw-2')")
            await other.commit()
        await asyncio.wait_for(writing, 10)
        assert (await store.get_gateway("gw-1")).online
        assert (await store.get_gateway("gw-2")).name is not None
    finally:
        await store.close()

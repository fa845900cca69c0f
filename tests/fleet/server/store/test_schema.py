"""Migrations (package data, applied once, recorded) and the schema both backends share."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from bmsgate.fleet.server.store import StoreSettings, open_store
from bmsgate.fleet.server.store.migrate import apply_migrations, pending_migrations
from bmsgate.fleet.server.store.postgres import PostgresRepository
from bmsgate.fleet.server.store.repository import IngestBatch, Resolution, StoreError
from bmsgate.fleet.server.store.settings import DAY, SQLITE_FILE
from bmsgate.fleet.server.store.sql import EXPORT_TABLES
from tests.fleet.server.store.messages import T0, telemetry


async def test_sqlite_is_migrated_once_and_has_the_exported_columns(tmp_path: Path) -> None:
    store = await open_store(StoreSettings(data_dir=tmp_path))
    await store.close()
    path = tmp_path / SQLITE_FILE
    assert pending_migrations("sqlite", str(path)) == []
    assert apply_migrations("sqlite", str(path)) == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        applied = [row[0] for row in db.execute("SELECT migration_id FROM _yoyo_migration")]
        for table, columns in EXPORT_TABLES.items():
            actual = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            assert actual == list(columns), table
    assert applied == ["0001_initial", "0002_rollouts", "0003_rollout_revision"]


async def test_postgresql_schema_partitions_and_partition_retention(postgres_url: str) -> None:
    store = await open_store(StoreSettings(postgres_url=postgres_url, raw_retention_days=14))
    assert isinstance(store, PostgresRepository)
    try:
        old = T0 - 30 * DAY
        batch = IngestBatch(telemetry=[(telemetry(at=old), old), (telemetry(at=T0, seq=2), T0)])
        await store.write_batch(batch)
        with psycopg.connect(postgres_url) as db:
            for table, columns in EXPORT_TABLES.items():
                actual = [
                    row[0]
                    for row in db.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "ORDER BY ordinal_position",
                        [table],
                    )
                ]
                assert actual == list(columns), table
            partitions = {
                row[0]
                for row in db.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'samples'"
                )
            }
            default_rows = db.execute("SELECT count(*) FROM samples_default").fetchone()
        assert "samples_day_20261216" in partitions  # the old sample's day, created before it was written
        assert "samples_day_20270115" in partitions
        assert default_rows == (0,)
        result = await store.apply_retention(T0 + DAY)
        assert result.raw == 1
        with psycopg.connect(postgres_url) as db:
            gone = db.execute("SELECT to_regclass('samples_day_20261216')").fetchone()
        assert gone == (None,)
        series = await store.series("gw-1", "b1", "soc", old - 1, T0 + 1, Resolution.RAW)
        assert [point.at for point in series.points] == [T0]
    finally:
        await store.close()


def _terminate_other_backends(postgres_url: str) -> int:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


async def test_postgresql_reconnects_after_its_backends_were_terminated(postgres_url: str) -> None:
    store = await open_store(StoreSettings(postgres_url=postgres_url))
    try:
        await store.write_batch(IngestBatch(telemetry=[(telemetry(at=T0, seq=1), T0)]))
        assert _terminate_other_backends(postgres_url) == 2
        outcomes = []
        for seq in (2, 3):
            try:
                await store.write_batch(IngestBatch(telemetry=[(telemetry(at=T0 + seq, seq=seq), T0 + seq)]))
                outcomes.append("stored")
            except StoreError:
                outcomes.append("failed")
        assert outcomes[-1] == "stored", outcomes
        for _ in range(2):
            try:
                gateways = await store.list_gateways()
            except StoreError:
                continue
            assert [gateway.id for gateway in gateways] == ["gw-1"]
            break
        else:
            raise AssertionError("the read connection did not come back")
        series = await store.series("gw-1", "b1", "soc", T0 - 1, T0 + 10, Resolution.RAW)
        assert len(series.points) == outcomes.count("stored") + 1
    finally:
        await store.close()

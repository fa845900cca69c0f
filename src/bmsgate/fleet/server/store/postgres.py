"""The PostgreSQL store: the only module that imports psycopg (3).

Samples go in by binary COPY into a per-connection staging table, then ``INSERT … SELECT … ON CONFLICT DO
NOTHING`` into ``samples`` (COPY itself cannot skip duplicates). ``samples`` is range-partitioned by day on
``at``; the partitions a batch needs, and ``partitions_ahead_days`` of future ones, are created before the
batch is written, and retention drops whole old partitions. A default partition catches anything else
(it stays empty in normal operation: a partition is always created before its rows arrive).

One write connection (every write and rollup, serialised by a lock) and one read connection (API queries);
both are asynchronous, so nothing blocks the event loop. A connection found lost (PostgreSQL restarted,
the backend terminated) fails that call with a :class:`StoreError` and is reopened on the next one, so the
callers' backoff paces the reconnect attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, Final

import psycopg
import psycopg.errors

from bmsgate.fleet.server.store import postgres_sql as P  # noqa: N812 - short alias for the SQL texts
from bmsgate.fleet.server.store import rows as R  # noqa: N812
from bmsgate.fleet.server.store.migrate import apply_migrations
from bmsgate.fleet.server.store.repository import (
    AlarmAction,
    AlarmFilter,
    AlarmHistoryEntry,
    AlarmRecord,
    AlarmState,
    EventRecord,
    GatewayRecord,
    IngestBatch,
    NewAlarm,
    Repository,
    Resolution,
    RetentionResult,
    Series,
    StoreError,
    UnknownRecord,
    WriteResult,
)
from bmsgate.fleet.server.store.settings import DAY, StoreSettings
from bmsgate.fleet.server.store.sql import (
    EXPORT_TABLES,
    alarm_filter_sql,
    newest_oldest_first,
    series_points,
    table_columns,
)

__all__ = ["PostgresRepository"]

_IDENTITY_TABLES: Final = frozenset({"alarms", "alarm_history", "rollout_audit"})
"""Tables whose ``id`` is an identity column: an import keeps the ids and moves the sequence past them."""

_EXPORT_CHUNK: Final = 5000
_IDS_PER_QUERY: Final = 1000
_BUILD_ASIDE_ROWS: Final = 500  # a read of more gateways than this builds its records in a thread
_CONNECT_TIMEOUT_S: Final = 10
_PARTITION_PREFIX: Final = "samples_day_"


def _day(at: float) -> float:
    return math.floor(at / DAY) * DAY


def _partition_name(day: float) -> str:
    return _PARTITION_PREFIX + dt.datetime.fromtimestamp(day, dt.UTC).strftime("%Y%m%d")


def _cells(value: Any) -> tuple[float | None, ...]:
    return tuple(value) if value is not None else ()


class PostgresRepository(Repository):
    """The PostgreSQL store at ``settings.postgres_url``."""

    backend = "postgresql"

    def __init__(
        self, settings: StoreSettings, write: psycopg.AsyncConnection[Any], read: psycopg.AsyncConnection[Any]
    ) -> None:
        self.settings = settings
        self._write_db = write
        self._read_db = read
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._partitions: set[float] = set()

    @classmethod
    async def open(cls, settings: StoreSettings) -> PostgresRepository:
        """Migrate the database and open both connections.

        Raises:
            StoreError: the database is unreachable or the migration failed.
        """
        assert settings.postgres_url is not None
        await asyncio.to_thread(apply_migrations, "postgresql", settings.postgres_url)
        write = await _connect(settings.postgres_url, staging=True)
        read = await _connect(settings.postgres_url, staging=False)
        store = cls(settings, write, read)
        async with store._writing():
            await store._load_partitions()
            await store._ensure_partitions([time.time()])
        return store

    async def close(self) -> None:
        """Close both connections."""
        for connection in (self._write_db, self._read_db):
            try:
                await connection.close()
            except psycopg.Error:
                continue

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The write connection, its lock held; reopened first if an earlier call lost it."""
        async with self._write_lock:
            if self._write_db.closed:
                assert self.settings.postgres_url is not None
                self._write_db = await _connect(self.settings.postgres_url, staging=True)
            yield self._write_db

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The read connection, its lock held; reopened first if an earlier call lost it."""
        async with self._read_lock:
            if self._read_db.closed:
                assert self.settings.postgres_url is not None
                self._read_db = await _connect(self.settings.postgres_url, staging=False)
            yield self._read_db

    async def _fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            async with self._reading() as db:
                cursor = await db.execute(sql, parameters)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    # -- partitions ------------------------------------------------------------------------------------

    async def _load_partitions(self) -> None:
        cursor = await self._write_db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'samples'"
        )
        for (name,) in await cursor.fetchall():
            if name.startswith(_PARTITION_PREFIX):
                day = dt.datetime.strptime(name[len(_PARTITION_PREFIX) :], "%Y%m%d").replace(tzinfo=dt.UTC)
                self._partitions.add(day.timestamp())

    async def _ensure_partitions(self, times: Sequence[float]) -> None:
        """Create the daily partitions `times` fall in, and the ones ahead of today (write lock held)."""
        today = _day(time.time())
        wanted = {_day(at) for at in times}
        wanted |= {today + index * DAY for index in range(self.settings.partitions_ahead_days + 1)}
        for day in sorted(wanted - self._partitions):
            name = _partition_name(day)
            try:
                await self._write_db.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF samples "
                    f"FOR VALUES FROM ({day!r}) TO ({day + DAY!r})"
                )
            except psycopg.errors.DuplicateTable:
                pass  # another server created it just now
            except psycopg.Error as exc:
                # Rows for that day sit in the default partition (e.g. from an import): they stay there.
                raise StoreError(f"PostgreSQL: cannot create partition {name}: {exc}") from exc
            self._partitions.add(day)

    # -- registry --------------------------------------------------------------------------------------

    async def _gateways(self, gateway_ids: Sequence[str] | None, *, summary: bool = False) -> list[GatewayRecord]:
        where, parameters = ("WHERE id = ANY(%s)", [list(gateway_ids)]) if gateway_ids is not None else ("", [])
        select = P.GATEWAY_SUMMARY_SELECT if summary else P.GATEWAY_SELECT
        rows = await self._fetch(f"{select} {where} ORDER BY id", parameters)
        battery_where = "WHERE gateway = ANY(%s)" if gateway_ids is not None else ""
        battery_select = P.BATTERY_SUMMARY_SELECT if summary else P.BATTERY_SELECT
        battery_rows = await self._fetch(f"{battery_select} {battery_where}", parameters)
        summary_where = "AND gateway = ANY(%s)" if gateway_ids is not None else ""
        alarm_rows = await self._fetch(P.ALARM_SUMMARY.format(where=summary_where), parameters)
        if len(rows) > _BUILD_ASIDE_ROWS:
            # ~50 us a gateway in Python: a full read of 50,000 would stop the event loop for seconds.
            return await asyncio.to_thread(R.gateway_records, rows, battery_rows, alarm_rows, summary=summary)
        return R.gateway_records(rows, battery_rows, alarm_rows, summary=summary)

    async def list_gateways(self) -> list[GatewayRecord]:
        """Every gateway (three queries whatever the fleet size)."""
        return await self._gateways(None)

    async def get_gateways(self, gateway_ids: Collection[str]) -> list[GatewayRecord]:
        """The gateways of `gateway_ids` that exist, sorted by id (three queries per 1,000 ids)."""
        return await self._gateways_by_id(gateway_ids, summary=False)

    async def list_gateway_summaries(self) -> list[GatewayRecord]:
        """Every gateway as the overview needs it (see :meth:`Repository.list_gateway_summaries`)."""
        return await self._gateways(None, summary=True)

    async def get_gateway_summaries(self, gateway_ids: Collection[str]) -> list[GatewayRecord]:
        """:meth:`get_gateways` in the summary form of :meth:`list_gateway_summaries`."""
        return await self._gateways_by_id(gateway_ids, summary=True)

    async def _gateways_by_id(self, gateway_ids: Collection[str], *, summary: bool) -> list[GatewayRecord]:
        wanted, found = sorted(set(gateway_ids)), []
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            found += await self._gateways(wanted[start : start + _IDS_PER_QUERY], summary=summary)
        return found

    async def get_gateway(self, gateway_id: str) -> GatewayRecord:
        """One gateway."""
        found = await self._gateways([gateway_id])
        if not found:
            raise UnknownRecord(f"no gateway {gateway_id!r}")
        return found[0]

    async def _write_statements(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run statements in one transaction; their row counts."""
        try:
            async with self._writing() as db, db.transaction():
                counts = []
                for sql, parameters in statements:
                    cursor = await db.execute(sql, parameters)
                    counts.append(cursor.rowcount)
                return counts
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def delete_gateway(self, gateway_id: str) -> None:
        """Remove a gateway and all its data."""
        statements: list[tuple[str, Sequence[Any]]] = [("DELETE FROM gateways WHERE id = %s", [gateway_id])]
        statements += [
            (f"DELETE FROM {table} WHERE gateway = %s", [gateway_id])
            for table in ("samples", "samples_minute", "samples_hour", "events", "alarms")
        ]
        counts = await self._write_statements(statements)
        if counts[0] == 0:
            raise UnknownRecord(f"no gateway {gateway_id!r}")

    async def set_home(self, gateway_id: str, home: tuple[float, float] | None) -> None:
        """Set or clear the geofence centre."""
        lat, lon = home if home is not None else (None, None)
        counts = await self._write_statements(
            [("UPDATE gateways SET home_lat = %s, home_lon = %s WHERE id = %s", [lat, lon, gateway_id])]
        )
        if counts[0] == 0:
            raise UnknownRecord(f"no gateway {gateway_id!r}")

    # -- writes ----------------------------------------------------------------------------------------

    async def write_batch(self, batch: IngestBatch) -> WriteResult:
        """Store a batch in one transaction (samples by binary COPY through the staging table)."""
        rows = R.BatchRows(batch, list)
        try:
            async with self._writing() as db:
                if rows.samples:
                    await self._ensure_partitions([row[2] for row in rows.samples])
                async with db.transaction(), db.cursor() as cursor:
                    # Samples first: they lock no shared row. Several ingest workers update the same gateway
                    # and battery rows, so whoever locks those holds them until its commit and the others
                    # wait; the shorter that stretch, the more the workers write side by side.
                    written = 0
                    if rows.samples:
                        columns = ", ".join(R.SAMPLE_COLUMNS)
                        async with cursor.copy(f"COPY samples_stage ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                            copy.set_types(list(P.SAMPLE_TYPES))
                            for sample in rows.samples:
                                await copy.write_row(sample)
                        await cursor.execute(P.STAGE_INSERT)
                        written = cursor.rowcount
                    events_written = 0
                    for event in rows.events:
                        await cursor.execute(P.EVENT, event)
                        events_written += cursor.rowcount
                    # Gateway rows in one order (stable: a gateway's own updates keep theirs): several ingest
                    # workers upserting the same gateways in different orders deadlocked (PostgreSQL aborts
                    # one; ingest retries it, counted as a store failure). Across the statements too: every
                    # row of the whole batch, existing or new, is taken first, in id order.
                    touched = {row["id"] for row in rows.states}
                    touched.update(row[0] for row in (*rows.availability, *rows.activity))
                    if len(touched) > 1:
                        await cursor.execute(P.LOCK_GATEWAYS, (sorted(touched),))
                    if rows.states:
                        await cursor.executemany(P.STATE, _in_gateway_order(rows.states, "id"))
                    if rows.availability:
                        await cursor.executemany(P.AVAILABILITY, _in_gateway_order(rows.availability, 0))
                    if rows.activity:
                        await cursor.executemany(P.ACTIVITY, _in_gateway_order(rows.activity, 0))
                    if rows.batteries:
                        await cursor.executemany(P.BATTERY, _in_gateway_order(rows.batteries, 0, 1))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc
        return rows.result(written, events_written)

    async def rollup(self, now: float) -> int:
        """Recompute the minute and hour buckets touched since the last rollup."""
        counts = await self._write_statements(
            [
                (P.MINUTE_ROLLUP, []),
                (P.HOUR_ROLLUP, []),
                ("UPDATE gateways SET rollup_from = NULL WHERE rollup_from IS NOT NULL", []),
            ]
        )
        return counts[0]

    async def apply_retention(self, now: float) -> RetentionResult:
        """Drop whole raw partitions older than the window, then delete the rest of what is too old."""
        s = self.settings
        raw_cutoff = now - s.raw_retention_days * DAY
        dropped = 0
        async with self._writing():
            for day in sorted(self._partitions):
                if day + DAY <= raw_cutoff:
                    try:
                        cursor = await self._write_db.execute(f"SELECT count(*) FROM {_partition_name(day)}")
                        counted = await cursor.fetchone()
                        await self._write_db.execute(f"DROP TABLE IF EXISTS {_partition_name(day)}")
                    except psycopg.Error as exc:
                        raise StoreError(f"PostgreSQL: {exc}") from exc
                    dropped += counted[0] if counted else 0
                    self._partitions.discard(day)
        raw, minute, hour, events, alarms = await self._write_statements(
            [
                ("DELETE FROM samples WHERE at < %s", [raw_cutoff]),
                ("DELETE FROM samples_minute WHERE bucket < %s", [now - s.minute_retention_days * DAY]),
                ("DELETE FROM samples_hour WHERE bucket < %s", [now - s.hour_retention_days * DAY]),
                ("DELETE FROM events WHERE at < %s", [now - s.event_retention_days * DAY]),
                (
                    "DELETE FROM alarms WHERE state = 'closed' AND closed_at < %s",
                    [now - s.closed_alarm_retention_days * DAY],
                ),
            ]
        )
        return RetentionResult(raw=raw + dropped, minute=minute, hour=hour, events=events, alarms=alarms)

    # -- history ---------------------------------------------------------------------------------------

    async def series(
        self,
        gateway_id: str,
        battery_id: str,
        field: str,
        since: float,
        until: float,
        resolution: Resolution = Resolution.AUTO,
        *,
        limit: int = 10_000,
    ) -> Series:
        """A time series of one battery's field."""
        R.validate_series_request(field, since, until)
        chosen = R.choose_resolution(resolution, since, until, time.time() - self.settings.raw_retention_days * DAY)
        table, time_column, columns = table_columns(chosen, field)
        rows = await self._fetch(
            f"SELECT {time_column}, {columns} FROM {table} WHERE gateway = %s AND battery = %s "
            f"AND {time_column} >= %s AND {time_column} <= %s ORDER BY {time_column} DESC LIMIT %s",
            [gateway_id, battery_id, since, until, limit + 1],
        )
        rows, truncated = newest_oldest_first(rows, limit)
        points = series_points(chosen, field, rows, _cells)
        return Series(
            gateway=gateway_id, battery=battery_id, field=field, resolution=chosen, points=points, truncated=truncated
        )

    async def list_events(self, gateway_id: str, *, since: float | None = None, limit: int = 1000) -> list[EventRecord]:
        """A gateway's events, newest first."""
        rows = await self._fetch(
            "SELECT gateway, seq, at, kind, battery, alarm, detail, data FROM events "
            "WHERE gateway = %s AND at >= %s ORDER BY at DESC, seq DESC LIMIT %s",
            [gateway_id, since if since is not None else 0.0, limit],
        )
        return [
            EventRecord(
                gateway=g, seq=seq, at=at, kind=kind, battery=battery, alarm=alarm, detail=detail, data=json.loads(data)
            )
            for g, seq, at, kind, battery, alarm, detail, data in rows
        ]

    # -- alarms ----------------------------------------------------------------------------------------

    async def _alarm_in(self, cursor: psycopg.AsyncCursor[Any], alarm_id: int) -> AlarmRecord:
        await cursor.execute(f"{P.ALARM_SELECT} WHERE id = %s", [alarm_id])
        row = await cursor.fetchone()
        if row is None:
            raise UnknownRecord(f"no alarm {alarm_id}")
        return R.alarm_from_row(row)

    @staticmethod
    async def _history(
        cursor: psycopg.AsyncCursor[Any], alarm_id: int, at: float, action: AlarmAction, by: str | None, detail: str
    ) -> None:
        await cursor.execute(
            "INSERT INTO alarm_history (alarm_id, at, action, actor, detail) VALUES (%s, %s, %s, %s, %s)",
            [alarm_id, at, action.value, by, detail],
        )

    async def open_alarm(self, alarm: NewAlarm) -> tuple[AlarmRecord, bool]:
        """Open an alarm unless one of the same kind is active."""
        try:
            async with self._writing() as db, db.transaction(), db.cursor() as cursor:
                await cursor.execute(
                    f"{P.ALARM_SELECT} WHERE gateway = %s AND COALESCE(battery, '') = %s AND kind = %s "
                    "AND state <> 'closed'",
                    [alarm.gateway, alarm.battery or "", alarm.kind],
                )
                existing = await cursor.fetchone()
                if existing is not None:
                    return R.alarm_from_row(existing), False
                await cursor.execute(
                    "INSERT INTO alarms (gateway, battery, kind, severity, state, message, value, opened_at) "
                    "VALUES (%s, %s, %s, %s, 'open', %s, %s, %s) RETURNING id",
                    [
                        alarm.gateway,
                        alarm.battery,
                        alarm.kind,
                        int(alarm.severity),
                        alarm.message,
                        alarm.value,
                        alarm.at,
                    ],
                )
                created = await cursor.fetchone()
                assert created is not None
                await self._history(cursor, created[0], alarm.at, AlarmAction.OPENED, None, alarm.message)
                return await self._alarm_in(cursor, created[0]), True
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def _transition(self, alarm_id: int, at: float, by: str | None, detail: str, *, close: bool) -> AlarmRecord:
        try:
            async with self._writing() as db, db.transaction(), db.cursor() as cursor:
                current = await self._alarm_in(cursor, alarm_id)
                if close and current.state is not AlarmState.CLOSED:
                    await cursor.execute(
                        "UPDATE alarms SET state = 'closed', closed_at = %s, closed_by = %s WHERE id = %s",
                        [at, by, alarm_id],
                    )
                    await self._history(cursor, alarm_id, at, AlarmAction.CLOSED, by, detail)
                elif not close and current.state is AlarmState.OPEN:
                    await cursor.execute(
                        "UPDATE alarms SET state = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s "
                        "WHERE id = %s",
                        [at, by, alarm_id],
                    )
                    await self._history(cursor, alarm_id, at, AlarmAction.ACKNOWLEDGED, by, detail)
                else:
                    return current
                return await self._alarm_in(cursor, alarm_id)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def close_alarm(self, alarm_id: int, at: float, *, by: str | None = None, detail: str = "") -> AlarmRecord:
        """Close an alarm (idempotent)."""
        return await self._transition(alarm_id, at, by, detail, close=True)

    async def acknowledge_alarm(self, alarm_id: int, at: float, *, by: str) -> AlarmRecord:
        """Acknowledge an open alarm."""
        return await self._transition(alarm_id, at, by, "", close=False)

    async def get_alarm(self, alarm_id: int) -> AlarmRecord:
        """One alarm."""
        rows = await self._fetch(f"{P.ALARM_SELECT} WHERE id = %s", [alarm_id])
        if not rows:
            raise UnknownRecord(f"no alarm {alarm_id}")
        return R.alarm_from_row(rows[0])

    async def list_alarms(self, alarm_filter: AlarmFilter | None = None) -> list[AlarmRecord]:
        """Alarms matching the filter, newest first."""
        alarm_filter = alarm_filter or AlarmFilter()
        where, parameters = alarm_filter_sql(alarm_filter, "%s")
        rows = await self._fetch(
            f"{P.ALARM_SELECT} {where} ORDER BY opened_at DESC, id DESC LIMIT %s", [*parameters, alarm_filter.limit]
        )
        return [R.alarm_from_row(row) for row in rows]

    async def alarm_history(self, alarm_id: int) -> list[AlarmHistoryEntry]:
        """An alarm's history, oldest first."""
        await self.get_alarm(alarm_id)
        rows = await self._fetch(
            "SELECT alarm_id, at, action, actor, detail FROM alarm_history WHERE alarm_id = %s ORDER BY at, id",
            [alarm_id],
        )
        return [R.history_from_row(row) for row in rows]

    async def add_alarm_history(
        self, alarm_id: int, at: float, action: AlarmAction, *, by: str | None = None, detail: str = ""
    ) -> None:
        """Add a history entry."""
        try:
            async with self._writing() as db, db.transaction(), db.cursor() as cursor:
                await self._alarm_in(cursor, alarm_id)
                await self._history(cursor, alarm_id, at, action, by, detail)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def delete_alarm(self, alarm_id: int) -> None:
        """Remove an alarm and its history."""
        counts = await self._write_statements([("DELETE FROM alarms WHERE id = %s", [alarm_id])])
        if counts[0] == 0:
            raise UnknownRecord(f"no alarm {alarm_id}")

    # -- moving data -----------------------------------------------------------------------------------

    async def export_rows(self) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Every row, table by table, in chunks (a server-side cursor per table)."""
        try:
            async with self._reading() as db:
                for table, columns in EXPORT_TABLES.items():
                    async with db.transaction(), db.cursor(name=f"export_{table}") as cursor:
                        await cursor.execute(f"SELECT {', '.join(columns)} FROM {table}")
                        while chunk := await cursor.fetchmany(_EXPORT_CHUNK):
                            yield table, [_portable(dict(zip(columns, row, strict=True))) for row in chunk]
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def import_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert exported rows (existing keys kept); alarm ids are kept and the id sequences moved past them."""
        columns = EXPORT_TABLES.get(table)
        if columns is None:
            raise StoreError(f"unknown table {table!r}")
        overriding = " OVERRIDING SYSTEM VALUE" if table in _IDENTITY_TABLES else ""
        placeholders = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}){overriding} VALUES ({placeholders}) ON CONFLICT DO NOTHING"
        values = [tuple(row.get(column) for column in columns) for row in rows]
        try:
            async with self._writing():
                if table == "samples":
                    await self._ensure_partitions([row["at"] for row in rows])
                async with self._write_db.transaction(), self._write_db.cursor() as cursor:
                    await cursor.executemany(sql, values)
                    if overriding:
                        await cursor.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"GREATEST((SELECT max(id) FROM {table}), 1))"
                        )
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    # -- store extensions --------------------------------------------------------------------------------

    async def extension_query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read query (``?`` placeholders)."""
        return await self._fetch(_qmark_to_format(sql), parameters)

    async def extension_write(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        many: Sequence[tuple[str, Sequence[Sequence[Any]]]] = (),
    ) -> list[list[tuple[Any, ...]]]:
        """Run the statements in one transaction; each one's returned rows."""
        try:
            async with self._writing() as db, db.transaction(), db.cursor() as cursor:
                returned: list[list[tuple[Any, ...]]] = []
                for sql, parameters in statements:
                    await cursor.execute(_qmark_to_format(sql), parameters)
                    returned.append(await cursor.fetchall() if cursor.description is not None else [])
                for sql, rows in many:
                    if rows:
                        await cursor.executemany(_qmark_to_format(sql), rows)
                return returned
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc


def _in_gateway_order(rows: Sequence[Any], *keys: int | str) -> list[Any]:
    """The rows sorted by the given columns (stable)."""
    return sorted(rows, key=lambda row: tuple(row[key] for key in keys))


def _qmark_to_format(sql: str) -> str:
    """An extension's portable SQL (``?`` placeholders, no literal ``?`` or ``%``) in psycopg's style."""
    return sql.replace("?", "%s")


async def _connect(url: str, *, staging: bool) -> psycopg.AsyncConnection[Any]:
    """A new connection (with the per-connection staging table for the write one).

    Raises:
        StoreError: the database is unreachable (after at most :data:`_CONNECT_TIMEOUT_S`).
    """
    try:
        connection = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        if staging:
            await connection.execute(P.STAGE_CREATE)
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL: cannot connect: {exc}") from exc
    return connection


def _portable(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("cells", "cells_min", "cells_avg", "cells_max"):
        if column in row and row[column] is not None:
            row[column] = list(row[column])
    return row

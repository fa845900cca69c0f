"""The SQLite store (the default): stdlib sqlite3 in WAL mode, run in worker threads.

One writer thread owns the write connection (every write and the rollups go through it, so they are
serialised without a database lock fight); one reader thread serves the API's queries from a second
connection, which WAL lets read while a batch commits. The event loop only awaits futures.

Cell voltages are stored as packed little-endian doubles (:func:`~.rows.cells_to_blob`); the rollups
aggregate them element-wise with Python aggregate functions registered on the connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from bmsgate.fleet.server.store import rows as R  # noqa: N812 - short alias for the shared row helpers
from bmsgate.fleet.server.store import sqlite_sql as S  # noqa: N812
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
from bmsgate.fleet.server.store.settings import DAY, SQLITE_FILE, StoreSettings
from bmsgate.fleet.server.store.sql import (
    EXPORT_TABLES,
    alarm_filter_sql,
    newest_oldest_first,
    series_points,
    table_columns,
)

__all__ = ["SqliteRepository"]

_T = TypeVar("_T")
_BUSY_TIMEOUT_S: Final = 30.0
_EXPORT_CHUNK: Final = 5000
_IDS_PER_QUERY: Final = 500


class _CellAggregate:
    """Element-wise min/max/mean of packed cell blobs (``cells_min``, ``cells_max``, ``cells_avg``)."""

    pick = "avg"

    def __init__(self) -> None:
        self.rows: list[tuple[float | None, ...]] = []

    def step(self, blob: bytes | None) -> None:
        if blob:
            self.rows.append(R.cells_from_blob(blob))

    def finalize(self) -> bytes | None:
        return R.cells_to_blob(R.elementwise(self.rows, self.pick)) if self.rows else None


class _CellMin(_CellAggregate):
    pick = "min"


class _CellMax(_CellAggregate):
    pick = "max"


class _CellWeightedMean:
    """``cells_wavg(cells_avg, n)``: the hour's cell means from the minutes' means and counts."""

    def __init__(self) -> None:
        self.rows: list[tuple[tuple[float | None, ...], int]] = []

    def step(self, blob: bytes | None, count: int) -> None:
        if blob:
            self.rows.append((R.cells_from_blob(blob), count))

    def finalize(self) -> bytes | None:
        return R.cells_to_blob(R.weighted_mean(self.rows)) if self.rows else None


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a power cut may lose the last commits, never corrupts the database.
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.create_aggregate("cells_min", 1, _CellMin)  # type: ignore[arg-type]
    connection.create_aggregate("cells_max", 1, _CellMax)  # type: ignore[arg-type]
    connection.create_aggregate("cells_avg", 1, _CellAggregate)  # type: ignore[arg-type]
    connection.create_aggregate("cells_wavg", 2, _CellWeightedMean)  # type: ignore[arg-type]
    return connection


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Any:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class SqliteRepository(Repository):
    """The SQLite store in ``<data_dir>/fleet.sqlite3``."""

    backend = "sqlite"

    def __init__(self, settings: StoreSettings, path: Path) -> None:
        self.settings = settings
        self.path = path
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, settings: StoreSettings) -> SqliteRepository:
        """Create the data directory if needed, migrate the database and open both connections.

        Raises:
            StoreError: the directory or database cannot be created, opened or migrated.
        """
        assert settings.data_dir is not None
        path = settings.data_dir / SQLITE_FILE
        store = cls(settings, path)

        def setup() -> None:
            try:
                settings.data_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            except OSError as exc:
                raise StoreError(f"cannot create the data directory: {exc}") from exc
            apply_migrations("sqlite", str(path))
            store._write_db = _connect(path)

        try:
            await store._run_write(setup)
            await store._run_read(lambda: setattr(store, "_read_db", _connect(path)))
        except BaseException:
            await store.close()
            raise
        return store

    async def _run(self, executor: concurrent.futures.Executor, work: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, work)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite ({self.path}): {type(exc).__name__}: {exc}") from exc

    async def _run_write(self, work: Callable[[], _T]) -> _T:
        return await self._run(self._writer, work)

    async def _run_read(self, work: Callable[[], _T]) -> _T:
        return await self._run(self._reader, work)

    def _w(self) -> sqlite3.Connection:
        if self._write_db is None:
            raise StoreError("the store is closed")
        return self._write_db

    def _r(self) -> sqlite3.Connection:
        if self._read_db is None:
            raise StoreError("the store is closed")
        return self._read_db

    async def close(self) -> None:
        """Close both connections and stop the worker threads."""

        def close_write() -> None:
            if self._write_db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._write_db.execute("PRAGMA optimize")
                self._write_db.close()
                self._write_db = None

        def close_read() -> None:
            if self._read_db is not None:
                self._read_db.close()
                self._read_db = None

        with contextlib.suppress(RuntimeError):
            await self._run_write(close_write)
            await self._run_read(close_read)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    # -- registry --------------------------------------------------------------------------------------

    def _gateways(self, where: str, parameters: Sequence[Any], *, summary: bool = False) -> list[GatewayRecord]:
        db = self._r()
        select = S.GATEWAY_SUMMARY_SELECT if summary else S.GATEWAY_SELECT
        gateway_rows = db.execute(f"{select} {where} ORDER BY id", parameters).fetchall()
        battery_where = where.replace("id", "gateway") if where else ""
        batteries: dict[str, list[tuple[Any, ...]]] = {}
        if summary:
            query = f"{S.BATTERY_SUMMARY_SELECT} {battery_where}"
            for gateway, battery, at, age_s, stale, present, *values in db.execute(query, parameters):
                reduced = R.summary_snapshot(present, *values)
                batteries.setdefault(gateway, []).append((battery, at, age_s, stale, reduced))
        else:
            for gateway, *rest in db.execute(f"{S.BATTERY_SELECT} {battery_where}", parameters):
                batteries.setdefault(gateway, []).append(tuple(rest))
        summary_where = where.replace("WHERE id", "AND gateway", 1)
        summaries = {
            gateway: (count, worst)
            for gateway, count, worst in db.execute(S.ALARM_SUMMARY.format(where=summary_where), parameters)
        }
        return [
            R.gateway_from_row(row, batteries.get(row[0], []), *summaries.get(row[0], (0, None)))
            for row in gateway_rows
        ]

    async def list_gateways(self) -> list[GatewayRecord]:
        """Every gateway (three queries whatever the fleet size)."""
        return await self._run_read(lambda: self._gateways("", ()))

    async def get_gateways(self, gateway_ids: Collection[str]) -> list[GatewayRecord]:
        """The gateways of `gateway_ids` that exist, sorted by id (three queries per 500 ids)."""
        return await self._run_read(lambda: self._gateways_by_id(gateway_ids, summary=False))

    async def list_gateway_summaries(self) -> list[GatewayRecord]:
        """Every gateway as the overview needs it (see :meth:`Repository.list_gateway_summaries`)."""
        return await self._run_read(lambda: self._gateways("", (), summary=True))

    async def get_gateway_summaries(self, gateway_ids: Collection[str]) -> list[GatewayRecord]:
        """:meth:`get_gateways` in the summary form of :meth:`list_gateway_summaries`."""
        return await self._run_read(lambda: self._gateways_by_id(gateway_ids, summary=True))

    def _gateways_by_id(self, gateway_ids: Collection[str], *, summary: bool) -> list[GatewayRecord]:
        wanted = sorted(set(gateway_ids))
        found: list[GatewayRecord] = []
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[start : start + _IDS_PER_QUERY]
            found += self._gateways(f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk, summary=summary)
        return found

    async def get_gateway(self, gateway_id: str) -> GatewayRecord:
        """One gateway."""
        found = await self._run_read(lambda: self._gateways("WHERE id = ?", (gateway_id,)))
        if not found:
            raise UnknownRecord(f"no gateway {gateway_id!r}")
        return found[0]

    async def delete_gateway(self, gateway_id: str) -> None:
        """Remove a gateway and all its data."""

        def delete() -> None:
            with _transaction(self._w()) as db:
                if db.execute("DELETE FROM gateways WHERE id = ?", (gateway_id,)).rowcount == 0:
                    raise UnknownRecord(f"no gateway {gateway_id!r}")
                for table in ("samples", "samples_minute", "samples_hour", "events", "alarms"):
                    db.execute(f"DELETE FROM {table} WHERE gateway = ?", (gateway_id,))

        await self._run_write(delete)

    async def set_home(self, gateway_id: str, home: tuple[float, float] | None) -> None:
        """Set or clear the geofence centre."""
        lat, lon = home if home is not None else (None, None)

        def update() -> None:
            db = self._w()
            if (
                db.execute(
                    "UPDATE gateways SET home_lat = ?, home_lon = ? WHERE id = ?", (lat, lon, gateway_id)
                ).rowcount
                == 0
            ):
                raise UnknownRecord(f"no gateway {gateway_id!r}")

        await self._run_write(update)

    # -- writes ----------------------------------------------------------------------------------------

    def _write(self, batch: IngestBatch) -> WriteResult:
        rows = R.BatchRows(batch, R.cells_to_blob)
        with _transaction(self._w()) as db:
            db.executemany(S.STATE, rows.states)
            db.executemany(S.AVAILABILITY, rows.availability)
            db.executemany(S.ACTIVITY, rows.activity)
            written = db.executemany(S.SAMPLE, rows.samples).rowcount if rows.samples else 0
            db.executemany(S.BATTERY, [(*row[:4], int(row[4]), row[5]) for row in rows.batteries])
            events_written = db.executemany(S.EVENT, rows.events).rowcount if rows.events else 0
        return rows.result(written, events_written)

    async def write_batch(self, batch: IngestBatch) -> WriteResult:
        """Store a batch in one transaction."""
        return await self._run_write(lambda: self._write(batch))

    async def rollup(self, now: float) -> int:
        """Recompute the minute and hour buckets touched since the last rollup."""

        def run() -> int:
            with _transaction(self._w()) as db:
                minutes: int = db.execute(S.minute_rollup_sql()).rowcount
                db.execute(S.hour_rollup_sql())
                db.execute("UPDATE gateways SET rollup_from = NULL WHERE rollup_from IS NOT NULL")
            return minutes

        return await self._run_write(run)

    async def apply_retention(self, now: float) -> RetentionResult:
        """Delete what is older than the retention settings."""
        s = self.settings

        def run() -> RetentionResult:
            with _transaction(self._w()) as db:
                raw = db.execute("DELETE FROM samples WHERE at < ?", (now - s.raw_retention_days * DAY,)).rowcount
                minute = db.execute(
                    "DELETE FROM samples_minute WHERE bucket < ?", (now - s.minute_retention_days * DAY,)
                ).rowcount
                hour = db.execute(
                    "DELETE FROM samples_hour WHERE bucket < ?", (now - s.hour_retention_days * DAY,)
                ).rowcount
                events = db.execute("DELETE FROM events WHERE at < ?", (now - s.event_retention_days * DAY,)).rowcount
                alarms = db.execute(
                    "DELETE FROM alarms WHERE state = 'closed' AND closed_at < ?",
                    (now - s.closed_alarm_retention_days * DAY,),
                ).rowcount
            return RetentionResult(raw=raw, minute=minute, hour=hour, events=events, alarms=alarms)

        return await self._run_write(run)

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
        raw_oldest = time.time() - self.settings.raw_retention_days * DAY
        chosen = R.choose_resolution(resolution, since, until, raw_oldest)

        def query() -> list[tuple[Any, ...]]:
            table, time_column, columns = table_columns(chosen, field)
            sql = (
                f"SELECT {time_column}, {columns} FROM {table} WHERE gateway = ? AND battery = ? "
                f"AND {time_column} >= ? AND {time_column} <= ? ORDER BY {time_column} DESC LIMIT ?"
            )
            return self._r().execute(sql, (gateway_id, battery_id, since, until, limit + 1)).fetchall()

        rows = await self._run_read(query)
        rows, truncated = newest_oldest_first(rows, limit)
        points = series_points(chosen, field, rows, R.cells_from_blob)
        return Series(
            gateway=gateway_id, battery=battery_id, field=field, resolution=chosen, points=points, truncated=truncated
        )

    async def list_events(self, gateway_id: str, *, since: float | None = None, limit: int = 1000) -> list[EventRecord]:
        """A gateway's events, newest first."""

        def query() -> list[EventRecord]:
            rows = self._r().execute(
                "SELECT gateway, seq, at, kind, battery, alarm, detail, data FROM events "
                "WHERE gateway = ? AND at >= ? ORDER BY at DESC, seq DESC LIMIT ?",
                (gateway_id, since if since is not None else 0.0, limit),
            )
            return [
                EventRecord(
                    gateway=g,
                    seq=seq,
                    at=at,
                    kind=kind,
                    battery=battery,
                    alarm=alarm,
                    detail=detail,
                    data=json.loads(data),
                )
                for g, seq, at, kind, battery, alarm, detail, data in rows
            ]

        return await self._run_read(query)

    # -- alarms ----------------------------------------------------------------------------------------

    def _alarm(self, db: sqlite3.Connection, alarm_id: int) -> AlarmRecord:
        row = db.execute(f"{S.ALARM_SELECT} WHERE id = ?", (alarm_id,)).fetchone()
        if row is None:
            raise UnknownRecord(f"no alarm {alarm_id}")
        return R.alarm_from_row(row)

    @staticmethod
    def _history(
        db: sqlite3.Connection, alarm_id: int, at: float, action: AlarmAction, by: str | None, detail: str
    ) -> None:
        db.execute(
            "INSERT INTO alarm_history (alarm_id, at, action, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (alarm_id, at, action.value, by, detail),
        )

    async def open_alarm(self, alarm: NewAlarm) -> tuple[AlarmRecord, bool]:
        """Open an alarm unless one of the same kind is active."""

        def run() -> tuple[AlarmRecord, bool]:
            with _transaction(self._w()) as db:
                existing = db.execute(
                    f"{S.ALARM_SELECT} WHERE gateway = ? AND coalesce(battery, '') = ? AND kind = ? "
                    "AND state <> 'closed'",
                    (alarm.gateway, alarm.battery or "", alarm.kind),
                ).fetchone()
                if existing is not None:
                    return R.alarm_from_row(existing), False
                cursor = db.execute(
                    "INSERT INTO alarms (gateway, battery, kind, severity, state, message, value, opened_at) "
                    "VALUES (?, ?, ?, ?, 'open', ?, ?, ?)",
                    (
                        alarm.gateway,
                        alarm.battery,
                        alarm.kind,
                        int(alarm.severity),
                        alarm.message,
                        alarm.value,
                        alarm.at,
                    ),
                )
                alarm_id = cursor.lastrowid
                assert alarm_id is not None
                self._history(db, alarm_id, alarm.at, AlarmAction.OPENED, None, alarm.message)
                return self._alarm(db, alarm_id), True

        return await self._run_write(run)

    async def close_alarm(self, alarm_id: int, at: float, *, by: str | None = None, detail: str = "") -> AlarmRecord:
        """Close an alarm (idempotent)."""

        def run() -> AlarmRecord:
            with _transaction(self._w()) as db:
                current = self._alarm(db, alarm_id)
                if current.state is AlarmState.CLOSED:
                    return current
                db.execute(
                    "UPDATE alarms SET state = 'closed', closed_at = ?, closed_by = ? WHERE id = ?", (at, by, alarm_id)
                )
                self._history(db, alarm_id, at, AlarmAction.CLOSED, by, detail)
                return self._alarm(db, alarm_id)

        return await self._run_write(run)

    async def acknowledge_alarm(self, alarm_id: int, at: float, *, by: str) -> AlarmRecord:
        """Acknowledge an open alarm."""

        def run() -> AlarmRecord:
            with _transaction(self._w()) as db:
                current = self._alarm(db, alarm_id)
                if current.state is not AlarmState.OPEN:
                    return current
                db.execute(
                    "UPDATE alarms SET state = 'acknowledged', acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
                    (at, by, alarm_id),
                )
                self._history(db, alarm_id, at, AlarmAction.ACKNOWLEDGED, by, "")
                return self._alarm(db, alarm_id)

        return await self._run_write(run)

    async def get_alarm(self, alarm_id: int) -> AlarmRecord:
        """One alarm."""
        return await self._run_read(lambda: self._alarm(self._r(), alarm_id))

    async def list_alarms(self, alarm_filter: AlarmFilter | None = None) -> list[AlarmRecord]:
        """Alarms matching the filter, newest first."""
        alarm_filter = alarm_filter or AlarmFilter()
        where, parameters = alarm_filter_sql(alarm_filter, "?")

        def query() -> list[AlarmRecord]:
            sql = f"{S.ALARM_SELECT} {where} ORDER BY opened_at DESC, id DESC LIMIT ?"
            return [R.alarm_from_row(row) for row in self._r().execute(sql, (*parameters, alarm_filter.limit))]

        return await self._run_read(query)

    async def alarm_history(self, alarm_id: int) -> list[AlarmHistoryEntry]:
        """An alarm's history, oldest first."""

        def query() -> list[AlarmHistoryEntry]:
            db = self._r()
            self._alarm(db, alarm_id)
            rows = db.execute(
                "SELECT alarm_id, at, action, actor, detail FROM alarm_history WHERE alarm_id = ? ORDER BY at, id",
                (alarm_id,),
            )
            return [R.history_from_row(row) for row in rows]

        return await self._run_read(query)

    async def add_alarm_history(
        self, alarm_id: int, at: float, action: AlarmAction, *, by: str | None = None, detail: str = ""
    ) -> None:
        """Add a history entry."""

        def run() -> None:
            db = self._w()
            self._alarm(db, alarm_id)
            self._history(db, alarm_id, at, action, by, detail)

        await self._run_write(run)

    async def delete_alarm(self, alarm_id: int) -> None:
        """Remove an alarm and its history."""

        def run() -> None:
            if self._w().execute("DELETE FROM alarms WHERE id = ?", (alarm_id,)).rowcount == 0:
                raise UnknownRecord(f"no alarm {alarm_id}")

        await self._run_write(run)

    # -- moving data -----------------------------------------------------------------------------------

    async def export_rows(self) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Every row, table by table, in chunks (cells as lists, booleans as booleans)."""
        for table, columns in EXPORT_TABLES.items():
            cursor = await self._run_read(
                lambda table=table, columns=columns: self._r().execute(  # type: ignore[misc]
                    f"SELECT {', '.join(columns)} FROM {table}"
                )
            )
            while True:
                chunk = await self._run_read(lambda cursor=cursor: cursor.fetchmany(_EXPORT_CHUNK))  # type: ignore[misc]
                if not chunk:
                    break
                yield table, [_portable(dict(zip(columns, row, strict=True))) for row in chunk]

    async def import_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert exported rows (existing keys kept)."""
        columns = EXPORT_TABLES.get(table)
        if columns is None:
            raise StoreError(f"unknown table {table!r}")
        sql = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def run() -> None:
            with _transaction(self._w()) as db:
                db.executemany(sql, [tuple(_native(column, row.get(column)) for column in columns) for row in rows])

        await self._run_write(run)

    # -- store extensions --------------------------------------------------------------------------------

    async def extension_query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read query (``?`` placeholders)."""

        def query() -> list[tuple[Any, ...]]:
            return self._r().execute(sql, tuple(parameters)).fetchall()

        return await self._run_read(query)

    async def extension_write(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        many: Sequence[tuple[str, Sequence[Sequence[Any]]]] = (),
    ) -> list[list[tuple[Any, ...]]]:
        """Run the statements in one transaction; each one's returned rows."""

        def run() -> list[list[tuple[Any, ...]]]:
            with _transaction(self._w()) as db:
                returned = [db.execute(sql, tuple(parameters)).fetchall() for sql, parameters in statements]
                for sql, rows in many:
                    db.executemany(sql, [tuple(row) for row in rows])
                return returned

        return await self._run_write(run)


_CELL_COLUMNS: Final = frozenset({"cells", "cells_min", "cells_avg", "cells_max"})
_BOOL_COLUMNS: Final = frozenset({"online", "stale"})


def _portable(row: dict[str, Any]) -> dict[str, Any]:
    for column in _CELL_COLUMNS & row.keys():
        blob = row[column]
        row[column] = None if blob is None else list(R.cells_from_blob(blob))
    for column in _BOOL_COLUMNS & row.keys():
        row[column] = bool(row[column])
    return row


def _native(column: str, value: Any) -> Any:
    if column in _CELL_COLUMNS and value is not None:
        return R.cells_to_blob(value)
    if column in _BOOL_COLUMNS:
        return int(bool(value))
    return value

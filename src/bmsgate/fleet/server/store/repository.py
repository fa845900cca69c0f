"""The one storage interface of the fleet server, and the records it hands out.

Ingest and the alarm engine write through it, the API reads through it; SQLite
(:mod:`bmsgate.fleet.server.store.sqlite`) and PostgreSQL (:mod:`bmsgate.fleet.server.store.postgres`)
implement it and pass the same test suite. Every method is a coroutine: a backend never blocks the event
loop (SQLite runs in a worker thread, PostgreSQL is asynchronous).

Records are frozen dataclasses with plain values, ready for JSON: times are Unix seconds (float), a battery's
snapshot is the full snapshot JSON form (``BatterySnapshot.to_dict()``, rebuilt from the compact form the
gateway sent), an inverter status is its JSON form as sent.

Writes come in :class:`IngestBatch` es (one transaction per batch, never one per message) and are
idempotent: ``(gateway, battery, at)`` is the key of a sample and ``(gateway, seq, at)`` of an event, so a
re-sent or backfilled message is stored once.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any, Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import EventMessage, StateMessage, TelemetryMessage

__all__ = [
    "NUMERIC_FIELDS",
    "AlarmAction",
    "AlarmFilter",
    "AlarmHistoryEntry",
    "AlarmRecord",
    "AlarmState",
    "Availability",
    "BatteryRecord",
    "EventRecord",
    "GatewayRecord",
    "IngestBatch",
    "LocationRecord",
    "NewAlarm",
    "PackRecord",
    "Repository",
    "Resolution",
    "RetentionResult",
    "Series",
    "SeriesPoint",
    "Severity",
    "StoreError",
    "UnknownRecord",
    "WriteResult",
    "series_field_is_valid",
]

NUMERIC_FIELDS: Final = (
    "voltage",
    "current",
    "power",
    "soc",
    "soh",
    "remaining_capacity",
    "cell_min",
    "cell_max",
    "cell_mean",
    "cell_delta",
    "temperature_min",
    "temperature_max",
    "temperature_mean",
    "mosfet_temperature",
)
"""Per-sample numbers kept for history (raw, per minute and per hour with min/avg/max).

Besides these, :meth:`Repository.series` answers ``cell_voltages`` (a list per point, cell 1 first) and
``cell:N`` (one cell, 1-based).
"""
CELL_VOLTAGES: Final = "cell_voltages"
_CELL_PREFIX: Final = "cell:"
MAX_CELLS: Final = 64


def series_field_is_valid(field: str) -> bool:
    """Whether :meth:`Repository.series` knows `field`."""
    if field in NUMERIC_FIELDS or field == CELL_VOLTAGES:
        return True
    if field.startswith(_CELL_PREFIX):
        number = field[len(_CELL_PREFIX) :]
        return number.isdigit() and 1 <= int(number) <= MAX_CELLS
    return False


class StoreError(BmsgateError):
    """The store failed (database unreachable, damaged, a migration failed) or refused a request."""


class UnknownRecord(StoreError):
    """The gateway, alarm or battery asked for does not exist."""


# -- registry -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PackRecord:
    """One data file or software artifact a gateway runs."""

    kind: str
    name: str
    version: str | None
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LocationRecord:
    """The last reported location of a gateway (``lat``/``lon`` None when ``fix`` is ``none``)."""

    lat: float | None
    lon: float | None
    fix: str
    source: str
    time: float | None
    """When it was measured (receiver time); None for configured coordinates."""
    received_at: float
    """When the server received it (for "location stale")."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BatteryRecord:
    """The latest reading of one battery of a gateway."""

    id: str
    name: str | None
    protocol: str | None
    at: float | None
    """Sampling time of the telemetry message it came in (None: listed in the state, never reported)."""
    age_s: float | None
    """Age of the reading at ``at`` as the gateway reported it."""
    stale: bool
    """The gateway marked it stale, or it was never reported."""
    snapshot: Mapping[str, Any] | None
    """The full snapshot JSON form (``BatterySnapshot.to_dict()``), derived values included."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GatewayRecord:
    """Everything the fleet overview and a site page show about one gateway."""

    id: str
    name: str | None
    site: str | None
    tags: tuple[str, ...]
    hardware: str
    software_version: str | None
    packs: tuple[PackRecord, ...]
    location: LocationRecord | None
    home: tuple[float, float] | None
    """The geofence centre (lat, lon): the first fixed position, or set with :meth:`Repository.set_home`."""
    online: bool
    """From the retained availability message (the last will says offline)."""
    last_seen: float | None
    """When the server last received anything from it (server clock)."""
    interval_s: float | None
    uptime_s: float | None
    buffer_queued: int
    buffer_dropped: int
    batteries: tuple[BatteryRecord, ...]
    inverter: Mapping[str, Any] | None
    inverter_at: float | None
    open_alarms: int
    """Alarms not closed (open or acknowledged)."""
    worst_severity: Severity | None
    """The worst severity among them; None without any."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``GET /api/v1/gateways``): snapshots as stored, severity by name."""
        location = self.location
        return {
            "id": self.id,
            "name": self.name,
            "site": self.site,
            "tags": list(self.tags),
            "hardware": self.hardware,
            "software_version": self.software_version,
            "packs": [
                {"kind": pack.kind, "name": pack.name, "version": pack.version, "sha256": pack.sha256}
                for pack in self.packs
            ],
            "location": None
            if location is None
            else {
                "lat": location.lat,
                "lon": location.lon,
                "fix": location.fix,
                "source": location.source,
                "time": location.time,
                "received_at": location.received_at,
            },
            "home": None if self.home is None else {"lat": self.home[0], "lon": self.home[1]},
            "online": self.online,
            "last_seen": self.last_seen,
            "interval_s": self.interval_s,
            "uptime_s": self.uptime_s,
            "buffer": {"queued": self.buffer_queued, "dropped": self.buffer_dropped},
            "batteries": [
                {
                    "id": battery.id,
                    "name": battery.name,
                    "protocol": battery.protocol,
                    "at": battery.at,
                    "age_s": battery.age_s,
                    "stale": battery.stale,
                    "snapshot": battery.snapshot,
                }
                for battery in self.batteries
            ],
            "inverter": self.inverter,
            "inverter_at": self.inverter_at,
            "open_alarms": self.open_alarms,
            "worst_severity": None if self.worst_severity is None else self.worst_severity.label,
        }


class Availability(enum.StrEnum):
    """A gateway's availability message."""

    ONLINE = "online"
    OFFLINE = "offline"


# -- history ------------------------------------------------------------------------------------------------


class Resolution(enum.StrEnum):
    """Which table a series comes from; ``auto`` picks by the span (raw ≤ 6 h, minute ≤ 7 days, else hour)."""

    RAW = "raw"
    MINUTE = "minute"
    HOUR = "hour"
    AUTO = "auto"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeriesPoint:
    """One point of a series.

    For raw samples ``min``, ``avg`` and ``max`` are the value itself and ``count`` is 1. For
    ``cell_voltages`` each of them is a tuple, cell 1 first (None for a cell a sample lacked).
    """

    at: float
    """Sampling time (raw) or the start of the bucket (rollups)."""
    avg: float | tuple[float | None, ...] | None
    min: float | tuple[float | None, ...] | None
    max: float | tuple[float | None, ...] | None
    count: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    """The answer of :meth:`Repository.series`."""

    gateway: str
    battery: str
    field: str
    resolution: Resolution
    """The resolution actually used (never ``auto``)."""
    points: tuple[SeriesPoint, ...]
    truncated: bool = False
    """More points were in the range than the limit: the oldest were left out (the newest are kept)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: points as ``{"at", "min", "avg", "max", "count"}`` (cell tuples as lists)."""

        def plain(value: float | tuple[float | None, ...] | None) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {
            "gateway": self.gateway,
            "battery": self.battery,
            "field": self.field,
            "resolution": self.resolution.value,
            "truncated": self.truncated,
            "points": [
                {"at": p.at, "min": plain(p.min), "avg": plain(p.avg), "max": plain(p.max), "count": p.count}
                for p in self.points
            ],
        }


# -- events and alarms --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """One gateway event as stored."""

    gateway: str
    seq: int
    at: float
    kind: str
    battery: str | None
    alarm: str | None
    detail: str
    data: Mapping[str, Any]


class Severity(enum.IntEnum):
    """How bad an alarm is (ordered: ``max`` gives the worst)."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        """The JSON name, e.g. ``warning``."""
        return self.name.lower()


class AlarmState(enum.StrEnum):
    """An alarm's life: open → acknowledged (optional) → closed."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class AlarmAction(enum.StrEnum):
    """What a history entry records."""

    OPENED = "opened"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"
    NOTIFIED = "notified"
    NOTIFY_FAILED = "notify_failed"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NewAlarm:
    """An alarm to open. At most one alarm per ``(gateway, battery, kind)`` is not closed at a time."""

    gateway: str
    battery: str | None
    kind: str
    """``no_data``, ``bms:<alarm name>``, ``low_soc``, ``cell_drift``, ``high_temperature``,
    ``low_temperature``, ``geofence``, ``gps_lost``."""
    severity: Severity
    message: str
    at: float
    value: float | None = None
    """The measured value that opened it (e.g. the cell delta in V), when there is one."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlarmRecord:
    """One alarm."""

    id: int
    gateway: str
    battery: str | None
    kind: str
    severity: Severity
    state: AlarmState
    message: str
    value: float | None
    opened_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    closed_at: float | None
    closed_by: str | None
    """Who closed it (a user), or None when the condition went away (closed by the server)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (live feed, notifications, API): the severity by name."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["severity"] = self.severity.label
        data["state"] = self.state.value
        return data


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlarmHistoryEntry:
    """One step in an alarm's history."""

    alarm_id: int
    at: float
    action: AlarmAction
    by: str | None
    detail: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlarmFilter:
    """Which alarms :meth:`Repository.list_alarms` returns (newest first)."""

    state: AlarmState | None = None
    """None: every state. ``OPEN`` means not closed (open or acknowledged)."""
    only_state: bool = False
    """With ``state=OPEN``: only alarms not yet acknowledged."""
    gateway: str | None = None
    since: float | None = None
    """Opened at or after (Unix s)."""
    limit: int = 1000


# -- writes -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True, kw_only=True)
class IngestBatch:
    """What ingest collected since the last commit; written in one transaction.

    Messages are the decoded protocol models; each comes with the server time it was received.
    """

    states: list[tuple[StateMessage, float]] = dataclasses.field(default_factory=list)
    availability: list[tuple[str, Availability, float]] = dataclasses.field(default_factory=list)
    """``(gateway, availability, received_at)``."""
    telemetry: list[tuple[TelemetryMessage, float]] = dataclasses.field(default_factory=list)
    events: list[tuple[EventMessage, float]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.states) + len(self.availability) + len(self.telemetry) + len(self.events)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """What a batch changed."""

    samples_written: int
    samples_duplicate: int
    """Samples already stored (re-sent or backfilled twice): ignored."""
    events_written: int
    events_duplicate: int
    snapshots_rejected: int
    """Battery readings whose snapshot did not rebuild (kept out; the rest of the message is stored)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetentionResult:
    """Rows removed by :meth:`Repository.apply_retention`."""

    raw: int
    minute: int
    hour: int
    events: int
    alarms: int


# -- the interface ------------------------------------------------------------------------------------------


class Repository(abc.ABC):
    """The fleet store. Open one with :func:`bmsgate.fleet.server.store.open_store`; close it with :meth:`close`.

    All methods raise :class:`StoreError` when the database fails; the ones taking an id raise
    :class:`UnknownRecord` when it does not exist.
    """

    backend: str
    """``sqlite`` or ``postgresql``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending work and release the database."""

    # registry

    @abc.abstractmethod
    async def list_gateways(self) -> list[GatewayRecord]:
        """Every gateway with its batteries, inverter and alarm summary (one query, sorted by id)."""

    @abc.abstractmethod
    async def get_gateways(self, gateway_ids: Collection[str]) -> list[GatewayRecord]:
        """The gateways of `gateway_ids` that exist, sorted by id (a few queries per batch of ids)."""

    async def list_gateway_summaries(self) -> list[GatewayRecord]:
        """Every gateway as the fleet overview needs it: cheaper than :meth:`list_gateways` at fleet scale.

        The records are :meth:`list_gateways`' with less in them: each battery that reported has only its
        snapshot's ``soc`` and ``cell_delta`` (what an overview row shows), extracted by the database; a
        battery listed in the state but never reported is left out; ``inverter`` is None. A backend
        without a lighter query reads the full records.
        """
        return await self.list_gateways()

    async def get_gateway_summaries(self, gateway_ids: Collection[str]) -> list[GatewayRecord]:
        """:meth:`get_gateways` in the summary form of :meth:`list_gateway_summaries`."""
        return await self.get_gateways(gateway_ids)

    @abc.abstractmethod
    async def get_gateway(self, gateway_id: str) -> GatewayRecord:
        """One gateway."""

    @abc.abstractmethod
    async def delete_gateway(self, gateway_id: str) -> None:
        """Remove a gateway and everything stored about it (samples, rollups, events, alarms)."""

    @abc.abstractmethod
    async def set_home(self, gateway_id: str, home: tuple[float, float] | None) -> None:
        """Set the geofence centre (None: take the next fixed position)."""

    # writes (ingest)

    @abc.abstractmethod
    async def write_batch(self, batch: IngestBatch) -> WriteResult:
        """Store a batch in one transaction (idempotent; see the module docstring)."""

    @abc.abstractmethod
    async def rollup(self, now: float) -> int:
        """Bring the per-minute and per-hour rollups up to `now`; returns the minute buckets written.

        Late (backfilled) samples are included: each gateway remembers the oldest sample written since
        its last rollup.
        """

    @abc.abstractmethod
    async def apply_retention(self, now: float) -> RetentionResult:
        """Delete what is older than the retention settings."""

    # history

    @abc.abstractmethod
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
        """A time series of one battery's field (see :data:`NUMERIC_FIELDS`), oldest first.

        At most `limit` points: the newest of the range, with :attr:`Series.truncated` set when older
        ones were left out.

        Raises:
            StoreError: unknown field or ``since > until`` (a :class:`ValueError` is not used so the API
                maps every store refusal the same way).
        """

    @abc.abstractmethod
    async def list_events(self, gateway_id: str, *, since: float | None = None, limit: int = 1000) -> list[EventRecord]:
        """A gateway's events, newest first."""

    # alarms

    @abc.abstractmethod
    async def open_alarm(self, alarm: NewAlarm) -> tuple[AlarmRecord, bool]:
        """Open an alarm; if one of the same ``(gateway, battery, kind)`` is not closed, return that one.

        Returns:
            The alarm and whether it was newly opened.
        """

    @abc.abstractmethod
    async def close_alarm(self, alarm_id: int, at: float, *, by: str | None = None, detail: str = "") -> AlarmRecord:
        """Close an alarm (by a user, or by the server when its condition went away); closing twice is a no-op."""

    @abc.abstractmethod
    async def acknowledge_alarm(self, alarm_id: int, at: float, *, by: str) -> AlarmRecord:
        """Acknowledge an open alarm (no-op when already acknowledged or closed)."""

    @abc.abstractmethod
    async def get_alarm(self, alarm_id: int) -> AlarmRecord:
        """One alarm."""

    @abc.abstractmethod
    async def list_alarms(self, alarm_filter: AlarmFilter | None = None) -> list[AlarmRecord]:
        """Alarms matching the filter (None: all), newest first."""

    @abc.abstractmethod
    async def alarm_history(self, alarm_id: int) -> list[AlarmHistoryEntry]:
        """An alarm's history, oldest first."""

    @abc.abstractmethod
    async def add_alarm_history(
        self, alarm_id: int, at: float, action: AlarmAction, *, by: str | None = None, detail: str = ""
    ) -> None:
        """Add a history entry (e.g. a notification sent or failed)."""

    @abc.abstractmethod
    async def delete_alarm(self, alarm_id: int) -> None:
        """Remove an alarm and its history."""

    # moving data between backends

    @abc.abstractmethod
    def export_rows(self) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Every stored row, table by table in dependency order, in chunks: ``(table, rows)``."""

    @abc.abstractmethod
    async def import_rows(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows produced by another store's :meth:`export_rows` (existing keys are kept)."""

    # store extensions: a part of the server with its own tables and migrations (rollouts) keeps its SQL

    @abc.abstractmethod
    async def extension_query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read query written for both backends (``?`` placeholders, portable SQL)."""

    @abc.abstractmethod
    async def extension_write(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        many: Sequence[tuple[str, Sequence[Sequence[Any]]]] = (),
    ) -> list[list[tuple[Any, ...]]]:
        """Run `statements`, then each of `many` once per parameter row, all in one transaction.

        Returns:
            Each of `statements`' returned rows (``RETURNING``; empty for none), in order.
        """

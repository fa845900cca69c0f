"""How records map to table rows and back: the part both backends share.

A sample row is ``(gateway, battery, at, *NUMERIC_FIELDS, cells)``; the backends differ only in how
``cells`` is stored (SQLite: packed little-endian doubles, PostgreSQL: ``double precision[]``). Derived values
(power, cell statistics, temperature statistics) come from :class:`~bmsgate.model.BatterySnapshot` itself,
the one place they are computed. A reading's snapshot is read with :mod:`.snapshots` (``from_dict`` and
``to_dict``'s results, at a fraction of their cost).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from bmsgate.fleet.protocol import Location, StateMessage, TelemetryMessage
from bmsgate.fleet.server.store import jsoncodec
from bmsgate.fleet.server.store.repository import (
    CELL_VOLTAGES,
    NUMERIC_FIELDS,
    AlarmAction,
    AlarmHistoryEntry,
    AlarmRecord,
    AlarmState,
    Availability,
    BatteryRecord,
    GatewayRecord,
    IngestBatch,
    LocationRecord,
    PackRecord,
    Resolution,
    Severity,
    StoreError,
    WriteResult,
    series_field_is_valid,
)
from bmsgate.fleet.server.store.snapshots import (
    all_finite,
    full_form,
    read_finite_snapshot,
    with_finite_derived,
)
from bmsgate.model import BatterySnapshot

__all__ = [
    "ALARM_COLUMNS",
    "BatchRows",
    "GATEWAY_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUMMARY_SNAPSHOT_KEYS",
    "ROLLUP_SECONDS",
    "SAMPLE_COLUMNS",
    "SampleValues",
    "TelemetryRows",
    "alarm_from_row",
    "cells_from_blob",
    "cells_to_blob",
    "summary_snapshot",
    "choose_resolution",
    "dumps",
    "gateway_from_row",
    "gateway_records",
    "history_from_row",
    "location_json",
    "state_values",
    "telemetry_rows",
    "validate_series_request",
]

SAMPLE_COLUMNS: Final = ("gateway", "battery", "at", *NUMERIC_FIELDS, "cells")
ROLLUP_SECONDS: Final = {Resolution.MINUTE: 60, Resolution.HOUR: 3600}
_AUTO_RAW_SPAN: Final = 6 * 3600.0
_AUTO_MINUTE_SPAN: Final = 7 * 86400.0

GATEWAY_COLUMNS: Final = (
    "id",
    "name",
    "site",
    "tags",
    "hardware",
    "software_version",
    "packs",
    "location",
    "home_lat",
    "home_lon",
    "online",
    "last_seen",
    "interval_s",
    "uptime_s",
    "buffer_queued",
    "buffer_dropped",
    "descriptors",
    "inverter",
    "inverter_at",
)
"""The gateways columns :func:`gateway_from_row` reads, followed by the battery and alarm aggregates."""
SUMMARY_COLUMNS: Final = tuple(
    "NULL" if column in ("descriptors", "inverter") else column for column in GATEWAY_COLUMNS
)
""":data:`GATEWAY_COLUMNS` for a summary read: what the overview leaves out is not read (nor decoded)."""
SUMMARY_SNAPSHOT_KEYS: Final = ("soc", "cell_delta")
"""What a summary read keeps of each battery's snapshot (the overview's values)."""

ALARM_COLUMNS: Final = (
    "id",
    "gateway",
    "battery",
    "kind",
    "severity",
    "state",
    "message",
    "value",
    "opened_at",
    "acknowledged_at",
    "acknowledged_by",
    "closed_at",
    "closed_by",
)


def dumps(value: Any) -> str:
    """Compact JSON text for a JSON column."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def cells_to_blob(cells: Sequence[float | None]) -> bytes:
    """Pack cell voltages (NaN for a missing one) as little-endian doubles."""
    return struct.pack(f"<{len(cells)}d", *(math.nan if cell is None else cell for cell in cells))


def cells_from_blob(blob: bytes | None) -> tuple[float | None, ...]:
    """Unpack :func:`cells_to_blob` (NaN back to None)."""
    if not blob:
        return ()
    return tuple(None if math.isnan(value) else value for value in struct.unpack(f"<{len(blob) // 8}d", blob))


SampleValues = tuple[Any, ...]
"""``(gateway, battery, at, *numeric, cells)`` with ``cells`` a tuple of floats (the backend encodes it)."""


def _numbers(full: dict[str, Any], snapshot: BatterySnapshot) -> tuple[float | None, ...]:
    """A sample's numbers: from the full form, which has all but the temperature extremes (the snapshot's)."""
    return tuple(full[name] if name in full else getattr(snapshot, name) for name in NUMERIC_FIELDS)


class TelemetryRows:
    """The rows of one telemetry message."""

    __slots__ = ("batteries", "rejected", "samples")

    def __init__(self) -> None:
        self.samples: list[SampleValues] = []
        self.batteries: list[tuple[str, str, float, float | None, bool, dict[str, Any] | None]] = []
        """``(gateway, battery, at, age_s, stale, full snapshot JSON form or None)``."""
        self.rejected = 0


def telemetry_rows(message: TelemetryMessage) -> TelemetryRows:
    """Sample rows and latest-battery rows of a message; a battery whose snapshot does not rebuild is counted."""
    rows = TelemetryRows()
    for reading in message.batteries:
        snapshot: BatterySnapshot | None = None
        if reading.snapshot is not None:
            try:
                # NaN and infinities pass JSON parsing but have no place in a reading (nor in JSON).
                snapshot = read_finite_snapshot(reading.snapshot)
            except Exception:  # noqa: BLE001 - FleetMessageError/ValueError; anything else from a hostile snapshot too
                rows.rejected += 1
                continue
        if snapshot is None:
            rows.batteries.append((message.gateway, reading.id, message.at, reading.age_s, True, None))
            continue
        full = full_form(snapshot)
        numbers = _numbers(full, snapshot)
        if not all_finite(numbers):
            rows.rejected += 1  # e.g. a huge voltage times a current overflows the power
            continue
        rows.batteries.append((message.gateway, reading.id, message.at, reading.age_s, reading.stale, full))
        if not reading.stale:
            # A stale reading repeats an old one: it is the latest known, not a new sample.
            rows.samples.append((message.gateway, reading.id, message.at, *numbers, tuple(snapshot.cell_voltages)))
    return rows


def location_json(location: Location | None, received_at: float) -> str | None:
    """The location column of a state."""
    if location is None:
        return None
    return dumps(
        {
            "lat": location.lat,
            "lon": location.lon,
            "fix": location.fix.value,
            "source": location.source,
            "time": location.time,
            "received_at": received_at,
        }
    )


def state_values(message: StateMessage, received_at: float) -> dict[str, Any]:
    """The gateways columns a state message sets."""
    return {
        "id": message.gateway,
        "name": message.name,
        "site": message.site,
        "tags": dumps(message.tags),
        "hardware": message.hardware,
        "software_version": message.software_version,
        "packs": dumps([pack.model_dump() for pack in message.packs]),
        "location": location_json(message.location, received_at),
        "interval_s": message.interval_s,
        "uptime_s": message.uptime_s,
        "buffer_queued": message.buffer.queued,
        "buffer_dropped": message.buffer.dropped,
        "descriptors": dumps([descriptor.model_dump() for descriptor in message.batteries]),
        "state_at": message.sent_at,
        "last_seen": received_at,
        "fixed_lat": message.location.lat if message.location is not None else None,
        "fixed_lon": message.location.lon if message.location is not None else None,
    }


def _loads(text: str | None, default: Any) -> Any:
    return default if text is None else jsoncodec.loads(text)


def gateway_from_row(
    row: Sequence[Any], batteries: Sequence[tuple[Any, ...]], open_alarms: int, worst: int | None
) -> GatewayRecord:
    """A record from a gateways row (:data:`GATEWAY_COLUMNS` order) and its battery rows.

    ``batteries`` rows are ``(battery, at, age_s, stale, snapshot JSON)``; in a summary read (a row of
    :data:`SUMMARY_COLUMNS`) the snapshot is the mapping :func:`summary_snapshot` made instead.
    """
    values = dict(zip(GATEWAY_COLUMNS, row, strict=True))
    location_data = _loads(values["location"], None)
    descriptors = {item["id"]: item for item in _loads(values["descriptors"], [])}
    seen: dict[str, BatteryRecord] = {}
    for battery, at, age_s, stale, snapshot_text in batteries:
        descriptor = descriptors.get(battery, {})
        seen[battery] = BatteryRecord(
            id=battery,
            name=descriptor.get("name"),
            protocol=descriptor.get("protocol"),
            at=at,
            age_s=age_s,
            stale=bool(stale) or snapshot_text is None,
            snapshot=snapshot_text if isinstance(snapshot_text, dict) else _loads(snapshot_text, None),
        )
    for battery_id, descriptor in descriptors.items():
        if battery_id not in seen:
            seen[battery_id] = BatteryRecord(
                id=battery_id,
                name=descriptor.get("name"),
                protocol=descriptor.get("protocol"),
                at=None,
                age_s=None,
                stale=True,
                snapshot=None,
            )
    home = None
    if values["home_lat"] is not None and values["home_lon"] is not None:
        home = (float(values["home_lat"]), float(values["home_lon"]))
    return GatewayRecord(
        id=values["id"],
        name=values["name"],
        site=values["site"],
        tags=tuple(_loads(values["tags"], [])),
        hardware=values["hardware"] or "",
        software_version=values["software_version"],
        packs=tuple(PackRecord(**pack) for pack in _loads(values["packs"], [])),
        location=None if location_data is None else LocationRecord(**location_data),
        home=home,
        online=bool(values["online"]),
        last_seen=values["last_seen"] or None,
        interval_s=values["interval_s"],
        uptime_s=values["uptime_s"],
        buffer_queued=values["buffer_queued"] or 0,
        buffer_dropped=values["buffer_dropped"] or 0,
        batteries=tuple(seen[key] for key in sorted(seen)),
        inverter=_loads(values["inverter"], None),
        inverter_at=values["inverter_at"],
        open_alarms=open_alarms,
        worst_severity=None if worst is None else Severity(worst),
    )


def summary_snapshot(present: object, *values: object) -> dict[str, Any] | None:
    """A summary read's stand-in for a snapshot: the :data:`SUMMARY_SNAPSHOT_KEYS` values the SQL extracted.

    Args:
        present: whether the battery has a snapshot at all (false: None, as a full read gives).
        values: the values of :data:`SUMMARY_SNAPSHOT_KEYS`, in order, as the database extracted them.
    """
    if not present:
        return None
    return dict(zip(SUMMARY_SNAPSHOT_KEYS, values, strict=True))


def alarm_from_row(row: Sequence[Any]) -> AlarmRecord:
    """A record from an alarms row (:data:`ALARM_COLUMNS` order)."""
    values = dict(zip(ALARM_COLUMNS, row, strict=True))
    values["severity"] = Severity(values["severity"])
    values["state"] = AlarmState(values["state"])
    return AlarmRecord(**values)


def history_from_row(row: Sequence[Any]) -> AlarmHistoryEntry:
    """A record from an ``(alarm_id, at, action, by, detail)`` row."""
    alarm_id, at, action, by, detail = row
    return AlarmHistoryEntry(alarm_id=alarm_id, at=at, action=AlarmAction(action), by=by, detail=detail)


def validate_series_request(field: str, since: float, until: float) -> None:
    """Refuse an unknown field or an empty range.

    Raises:
        StoreError: what is wrong.
    """
    if not series_field_is_valid(field):
        raise StoreError(
            f"unknown series field {field!r} (one of {', '.join(NUMERIC_FIELDS)}, {CELL_VOLTAGES}, cell:N)"
        )
    if not (math.isfinite(since) and math.isfinite(until)) or since > until:
        raise StoreError(f"bad time range: since {since} > until {until}")


def choose_resolution(resolution: Resolution, since: float, until: float, raw_oldest: float) -> Resolution:
    """The table a series request reads (``auto`` by span; raw data beyond retention falls back to minutes)."""
    if resolution is not Resolution.AUTO:
        return resolution
    span = until - since
    if span <= _AUTO_RAW_SPAN and since >= raw_oldest:
        return Resolution.RAW
    if span <= _AUTO_MINUTE_SPAN:
        return Resolution.MINUTE
    return Resolution.HOUR


def cell_index(field: str) -> int | None:
    """0-based cell index of a ``cell:N`` field, else None."""
    if field.startswith("cell:"):
        return int(field[5:]) - 1
    return None


def elementwise(rows: Sequence[tuple[float | None, ...]], pick: str) -> tuple[float | None, ...]:
    """Element-wise min, max or mean of cell tuples (None and NaN ignored), for rollups."""
    width = max((len(row) for row in rows), default=0)
    result: list[float | None] = []
    for index in range(width):
        column = [row[index] for row in rows if index < len(row) and row[index] is not None]
        values = [value for value in column if value is not None and not math.isnan(value)]
        if not values:
            result.append(None)
        elif pick == "min":
            result.append(min(values))
        elif pick == "max":
            result.append(max(values))
        else:
            result.append(math.fsum(values) / len(values))
    return tuple(result)


def weighted_mean(rows: Sequence[tuple[tuple[float | None, ...], int]]) -> tuple[float | None, ...]:
    """Element-wise mean of per-minute cell means weighted by their sample counts (hour rollups)."""
    width = max((len(row) for row, _ in rows), default=0)
    result: list[float | None] = []
    for index in range(width):
        pairs = [(row[index], count) for row, count in rows if index < len(row) and row[index] is not None]
        pairs = [(value, count) for value, count in pairs if value is not None and not math.isnan(value)]
        total = sum(count for _, count in pairs)
        result.append(
            math.fsum(value * count for value, count in pairs if value is not None) / total if total else None
        )
    return tuple(result)


def mapping_or_empty(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``value`` or an empty mapping."""
    return value if value is not None else {}


def _full_json(full: dict[str, Any] | None) -> str | None:
    """The full JSON form as text; None when a derived value overflows (the sample itself was checked)."""
    if full is None or not with_finite_derived(full):
        return None
    return jsoncodec.dumps(full)


class BatchRows:
    """Every row one :class:`~.repository.IngestBatch` writes, backend-neutral but for the cell encoding."""

    __slots__ = ("activity", "availability", "batteries", "events", "rejected", "samples", "states")

    def __init__(self, batch: IngestBatch, encode_cells: Callable[[tuple[float, ...]], Any]) -> None:
        self.samples: list[tuple[Any, ...]] = []
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        activity: dict[str, list[Any]] = {}
        self.rejected = 0
        for message, received_at in batch.telemetry:
            rows = telemetry_rows(message)
            self.rejected += rows.rejected
            self.samples.extend((*row[:-1], encode_cells(row[-1])) for row in rows.samples)
            for row in rows.batteries:
                previous = latest.get((row[0], row[1]))
                if previous is None or row[2] >= previous[2]:
                    latest[row[0], row[1]] = row
            entry = activity.setdefault(message.gateway, [message.gateway, 0.0, None, None, None])
            entry[1] = max(entry[1], received_at)
            if rows.samples:
                entry[2] = message.at if entry[2] is None else min(entry[2], message.at)
            if message.inverter is not None and (entry[4] is None or message.at >= entry[4]):
                entry[3], entry[4] = dumps(message.inverter), message.at
        for event, received_at in batch.events:
            entry = activity.setdefault(event.gateway, [event.gateway, 0.0, None, None, None])
            entry[1] = max(entry[1], received_at)
        # Only the newest reading per battery is kept as "latest": only it needs its full JSON form.
        self.batteries = [(*row[:5], _full_json(row[5])) for row in latest.values()]
        """``(gateway, battery, at, age_s, stale, full snapshot JSON)``, the newest per battery."""
        self.activity = [tuple(entry) for entry in activity.values()]
        """``(gateway, last_seen, rollup_from, inverter JSON, inverter_at)``."""
        self.states = [state_values(message, received_at) for message, received_at in batch.states]
        # "offline" is usually the broker speaking the last will, not the gateway: it is no sign of life.
        self.availability = [
            (gateway, value is Availability.ONLINE, received_at if value is Availability.ONLINE else 0.0)
            for gateway, value, received_at in batch.availability
        ]
        self.events = [
            (e.gateway, e.seq, e.at, e.kind.value, e.battery, e.alarm, e.detail, dumps(e.data), received_at)
            for e, received_at in batch.events
        ]

    def result(self, samples_written: int, events_written: int) -> WriteResult:
        """The write result once the rows are stored."""
        return WriteResult(
            samples_written=samples_written,
            samples_duplicate=len(self.samples) - samples_written,
            events_written=events_written,
            events_duplicate=len(self.events) - events_written,
            snapshots_rejected=self.rejected,
        )


def gateway_records(
    rows: Sequence[tuple[Any, ...]],
    battery_rows: Sequence[tuple[Any, ...]],
    alarm_rows: Sequence[tuple[Any, ...]],
    *,
    summary: bool,
) -> list[GatewayRecord]:
    """Gateway records from the rows of the three registry queries (the batteries' in full or summary form)."""
    batteries: dict[str, list[tuple[Any, ...]]] = {}
    if summary:
        for gateway, battery, at, age_s, stale, present, *values in battery_rows:
            reduced = summary_snapshot(present, *values)
            batteries.setdefault(gateway, []).append((battery, at, age_s, stale, reduced))
    else:
        for gateway, *rest in battery_rows:
            batteries.setdefault(gateway, []).append(tuple(rest))
    alarms = {gateway: (count, worst) for gateway, count, worst in alarm_rows}
    return [gateway_from_row(row, batteries.get(row[0], []), *alarms.get(row[0], (0, None))) for row in rows]

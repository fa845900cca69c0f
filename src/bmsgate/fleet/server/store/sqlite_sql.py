"""The SQL text of the SQLite store (placeholders ``?``; rollups use the cell aggregates of :mod:`.sqlite`)."""

from __future__ import annotations

from typing import Final

from bmsgate.fleet.server.store.repository import NUMERIC_FIELDS
from bmsgate.fleet.server.store.rows import ALARM_COLUMNS, GATEWAY_COLUMNS, SAMPLE_COLUMNS, SUMMARY_COLUMNS
from bmsgate.fleet.server.store.sql import ROLLUP_FIELDS_SQL

__all__ = [
    "ACTIVITY",
    "ALARM_SELECT",
    "ALARM_SUMMARY",
    "AVAILABILITY",
    "BATTERY",
    "EVENT",
    "BATTERY_SELECT",
    "BATTERY_SUMMARY_SELECT",
    "GATEWAY_SELECT",
    "GATEWAY_SUMMARY_SELECT",
    "SAMPLE",
    "STATE",
    "hour_rollup_sql",
    "minute_rollup_sql",
]

STATE: Final = """
INSERT INTO gateways (id, name, site, tags, hardware, software_version, packs, location, interval_s, uptime_s,
    buffer_queued, buffer_dropped, descriptors, state_at, last_seen, home_lat, home_lon)
VALUES (:id, :name, :site, :tags, :hardware, :software_version, :packs, :location, :interval_s, :uptime_s,
    :buffer_queued, :buffer_dropped, :descriptors, :state_at, :last_seen, :fixed_lat, :fixed_lon)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, site = excluded.site, tags = excluded.tags,
    hardware = excluded.hardware, software_version = excluded.software_version, packs = excluded.packs,
    location = excluded.location, interval_s = excluded.interval_s, uptime_s = excluded.uptime_s,
    buffer_queued = excluded.buffer_queued, buffer_dropped = excluded.buffer_dropped,
    descriptors = excluded.descriptors, state_at = excluded.state_at,
    last_seen = max(coalesce(gateways.last_seen, 0), excluded.last_seen),
    home_lat = coalesce(gateways.home_lat, excluded.home_lat),
    home_lon = CASE WHEN gateways.home_lat IS NULL THEN excluded.home_lon ELSE gateways.home_lon END
WHERE gateways.state_at IS NULL OR excluded.state_at >= gateways.state_at
"""
AVAILABILITY: Final = """
INSERT INTO gateways (id, online, last_seen) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET online = excluded.online,
    last_seen = max(coalesce(gateways.last_seen, 0), excluded.last_seen)
"""
ACTIVITY: Final = """
INSERT INTO gateways (id, last_seen, rollup_from, inverter, inverter_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET last_seen = max(coalesce(gateways.last_seen, 0), excluded.last_seen),
    rollup_from = min(coalesce(gateways.rollup_from, excluded.rollup_from), coalesce(excluded.rollup_from, 1e300)),
    inverter = CASE WHEN excluded.inverter_at >= coalesce(gateways.inverter_at, 0)
        THEN excluded.inverter ELSE gateways.inverter END,
    inverter_at = max(coalesce(gateways.inverter_at, 0), coalesce(excluded.inverter_at, 0))
"""
SAMPLE: Final = (
    f"INSERT OR IGNORE INTO samples ({', '.join(SAMPLE_COLUMNS)}) VALUES ({', '.join('?' * len(SAMPLE_COLUMNS))})"
)
BATTERY: Final = """
INSERT INTO batteries (gateway, battery, at, age_s, stale, snapshot) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (gateway, battery) DO UPDATE SET at = excluded.at, age_s = excluded.age_s, stale = excluded.stale,
    snapshot = coalesce(excluded.snapshot, batteries.snapshot)
WHERE excluded.at >= batteries.at
"""
EVENT: Final = """
INSERT OR IGNORE INTO events (gateway, seq, at, kind, battery, alarm, detail, data, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
GATEWAY_SELECT: Final = f"SELECT {', '.join(GATEWAY_COLUMNS)} FROM gateways"
GATEWAY_SUMMARY_SELECT: Final = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM gateways"
BATTERY_SELECT: Final = "SELECT gateway, battery, at, age_s, stale, snapshot FROM batteries"
BATTERY_SUMMARY_SELECT: Final = (
    # The overview's values from the JSON in SQLite's C code (the GIL released meanwhile), not in Python.
    "SELECT gateway, battery, at, age_s, stale, snapshot IS NOT NULL, "
    "CASE WHEN json_valid(snapshot) THEN json_extract(snapshot, '$.soc') END, "
    "CASE WHEN json_valid(snapshot) THEN json_extract(snapshot, '$.cell_delta') END FROM batteries"
)
ALARM_SELECT: Final = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms"
ALARM_SUMMARY: Final = (
    "SELECT gateway, count(*), max(severity) FROM alarms WHERE state <> 'closed' {where} GROUP BY gateway"
)


def minute_rollup_sql() -> str:
    """Recompute the minute buckets of every gateway from its ``rollup_from`` on."""
    select = ", ".join(f"min({f}), avg({f}), max({f})" for f in NUMERIC_FIELDS)
    return f"""
INSERT OR REPLACE INTO samples_minute (gateway, battery, bucket, n, {ROLLUP_FIELDS_SQL},
    cells_min, cells_avg, cells_max)
SELECT s.gateway, s.battery, CAST(s.at / 60 AS INTEGER) * 60 AS minute, count(*), {select},
    cells_min(s.cells), cells_avg(s.cells), cells_max(s.cells)
FROM samples s JOIN gateways g ON g.id = s.gateway
WHERE g.rollup_from IS NOT NULL AND s.at >= CAST(g.rollup_from / 60 AS INTEGER) * 60
GROUP BY s.gateway, s.battery, minute
"""


def hour_rollup_sql() -> str:
    """Recompute the hour buckets from the minute buckets, from each gateway's ``rollup_from`` hour on."""
    parts = []
    for f in NUMERIC_FIELDS:
        weighted = f"sum({f}_avg * n) / sum(CASE WHEN {f}_avg IS NOT NULL THEN n END)"
        parts.append(f"min({f}_min), {weighted}, max({f}_max)")
    return f"""
INSERT OR REPLACE INTO samples_hour (gateway, battery, bucket, n, {ROLLUP_FIELDS_SQL},
    cells_min, cells_avg, cells_max)
SELECT m.gateway, m.battery, CAST(m.bucket / 3600 AS INTEGER) * 3600 AS hour, sum(m.n), {", ".join(parts)},
    cells_min(m.cells_min), cells_wavg(m.cells_avg, m.n), cells_max(m.cells_max)
FROM samples_minute m JOIN gateways g ON g.id = m.gateway
WHERE g.rollup_from IS NOT NULL AND m.bucket >= CAST(g.rollup_from / 3600 AS INTEGER) * 3600
GROUP BY m.gateway, m.battery, hour
"""

"""The SQL text of the PostgreSQL store (placeholders ``%s``; partition and rollup statements)."""

from __future__ import annotations

from typing import Final

from bmsgate.fleet.server.store.repository import NUMERIC_FIELDS
from bmsgate.fleet.server.store.rows import ALARM_COLUMNS, GATEWAY_COLUMNS, SAMPLE_COLUMNS, SUMMARY_COLUMNS
from bmsgate.fleet.server.store.sql import ROLLUP_COLUMNS, ROLLUP_FIELDS_SQL

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
    "HOUR_ROLLUP",
    "LOCK_GATEWAYS",
    "MINUTE_ROLLUP",
    "SAMPLE_TYPES",
    "STAGE_CREATE",
    "STAGE_INSERT",
    "STATE",
]

STATE: Final = """
INSERT INTO gateways (id, name, site, tags, hardware, software_version, packs, location, interval_s, uptime_s,
    buffer_queued, buffer_dropped, descriptors, state_at, last_seen, home_lat, home_lon)
VALUES (%(id)s, %(name)s, %(site)s, %(tags)s, %(hardware)s, %(software_version)s, %(packs)s, %(location)s,
    %(interval_s)s, %(uptime_s)s, %(buffer_queued)s, %(buffer_dropped)s, %(descriptors)s, %(state_at)s,
    %(last_seen)s, %(fixed_lat)s, %(fixed_lon)s)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, site = excluded.site, tags = excluded.tags,
    hardware = excluded.hardware, software_version = excluded.software_version, packs = excluded.packs,
    location = excluded.location, interval_s = excluded.interval_s, uptime_s = excluded.uptime_s,
    buffer_queued = excluded.buffer_queued, buffer_dropped = excluded.buffer_dropped,
    descriptors = excluded.descriptors, state_at = excluded.state_at,
    last_seen = GREATEST(gateways.last_seen, excluded.last_seen),
    home_lat = COALESCE(gateways.home_lat, excluded.home_lat),
    home_lon = CASE WHEN gateways.home_lat IS NULL THEN excluded.home_lon ELSE gateways.home_lon END
WHERE gateways.state_at IS NULL OR excluded.state_at >= gateways.state_at
"""
LOCK_GATEWAYS: Final = """
INSERT INTO gateways (id) SELECT id FROM unnest(%s::text[]) AS batch (id) ORDER BY id
ON CONFLICT (id) DO UPDATE SET online = gateways.online WHERE false
"""
"""Every gateway row a batch's upserts below touch, taken at once and in id order: an existing row locked
(ON CONFLICT DO UPDATE locks the conflicting row even when its WHERE is false, and changes nothing), a
missing one inserted bare (the upserts fill it in the same transaction). New rows matter: two workers
inserting a new fleet's first states and availabilities deadlocked on the gateways' key index while only
the existing rows were locked first."""
AVAILABILITY: Final = """
INSERT INTO gateways (id, online, last_seen) VALUES (%s, %s, %s)
ON CONFLICT (id) DO UPDATE SET online = excluded.online, last_seen = GREATEST(gateways.last_seen, excluded.last_seen)
"""
ACTIVITY: Final = """
INSERT INTO gateways (id, last_seen, rollup_from, inverter, inverter_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET last_seen = GREATEST(gateways.last_seen, excluded.last_seen),
    rollup_from = LEAST(gateways.rollup_from, excluded.rollup_from),
    inverter = CASE WHEN excluded.inverter_at >= COALESCE(gateways.inverter_at, 0)
        THEN excluded.inverter ELSE gateways.inverter END,
    inverter_at = GREATEST(gateways.inverter_at, excluded.inverter_at)
"""
STAGE_CREATE: Final = "CREATE TEMP TABLE samples_stage (LIKE samples) ON COMMIT DELETE ROWS"
STAGE_INSERT: Final = (
    f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)}) SELECT DISTINCT ON (gateway, battery, at) "
    f"{', '.join(SAMPLE_COLUMNS)} FROM samples_stage ON CONFLICT DO NOTHING"
)
SAMPLE_TYPES: Final = ("text", "text", "float8", *("float8" for _ in NUMERIC_FIELDS), "float8[]")
"""Binary COPY column types of :data:`~.rows.SAMPLE_COLUMNS`."""
BATTERY: Final = """
INSERT INTO batteries (gateway, battery, at, age_s, stale, snapshot) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (gateway, battery) DO UPDATE SET at = excluded.at, age_s = excluded.age_s, stale = excluded.stale,
    snapshot = COALESCE(excluded.snapshot, batteries.snapshot)
WHERE excluded.at >= batteries.at
"""
EVENT: Final = """
INSERT INTO events (gateway, seq, at, kind, battery, alarm, detail, data, received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
GATEWAY_SELECT: Final = f"SELECT {', '.join(GATEWAY_COLUMNS)} FROM gateways"
GATEWAY_SUMMARY_SELECT: Final = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM gateways"
BATTERY_SELECT: Final = "SELECT gateway, battery, at, age_s, stale, snapshot FROM batteries"
BATTERY_SUMMARY_SELECT: Final = (
    # The overview's values extracted by PostgreSQL: the snapshots' JSON never reaches Python.
    "SELECT gateway, battery, at, age_s, stale, snapshot IS NOT NULL, "
    "CASE WHEN jsonb_typeof(j.s -> 'soc') = 'number' THEN (j.s ->> 'soc')::float8 END, "
    "CASE WHEN jsonb_typeof(j.s -> 'cell_delta') = 'number' THEN (j.s ->> 'cell_delta')::float8 END "
    "FROM batteries CROSS JOIN LATERAL (SELECT snapshot::jsonb AS s) AS j"
)
ALARM_SELECT: Final = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms"
ALARM_SUMMARY: Final = (
    "SELECT gateway, count(*), max(severity) FROM alarms WHERE state <> 'closed' {where} GROUP BY gateway"
)

_UPDATE_ROLLUP: Final = ", ".join(
    f"{column} = excluded.{column}" for column in ("n", *ROLLUP_COLUMNS, "cells_min", "cells_avg", "cells_max")
)

MINUTE_ROLLUP: Final = f"""
WITH touched AS (
    SELECT s.* FROM samples s JOIN gateways g ON g.id = s.gateway
    WHERE g.rollup_from IS NOT NULL AND s.at >= floor(g.rollup_from / 60) * 60
), base AS (
    SELECT gateway, battery, floor(at / 60) * 60 AS bucket, count(*) AS n,
        {", ".join(f"min({f}), avg({f}), max({f})" for f in NUMERIC_FIELDS)}
    FROM touched GROUP BY 1, 2, 3
), per_cell AS (
    SELECT t.gateway, t.battery, floor(t.at / 60) * 60 AS bucket, c.i, min(c.v) AS lo, avg(c.v) AS mean, max(c.v) AS hi
    FROM touched t CROSS JOIN LATERAL unnest(t.cells) WITH ORDINALITY AS c (v, i) GROUP BY 1, 2, 3, 4
), cells AS (
    SELECT gateway, battery, bucket, array_agg(lo ORDER BY i) AS lo, array_agg(mean ORDER BY i) AS mean,
        array_agg(hi ORDER BY i) AS hi
    FROM per_cell GROUP BY 1, 2, 3
)
INSERT INTO samples_minute (gateway, battery, bucket, n, {ROLLUP_FIELDS_SQL}, cells_min, cells_avg, cells_max)
SELECT base.*, cells.lo, cells.mean, cells.hi FROM base LEFT JOIN cells USING (gateway, battery, bucket)
ON CONFLICT (gateway, battery, bucket) DO UPDATE SET {_UPDATE_ROLLUP}
"""

_WEIGHTED: Final = ", ".join(
    f"min({f}_min), sum({f}_avg * n) / sum(CASE WHEN {f}_avg IS NOT NULL THEN n END), max({f}_max)"
    for f in NUMERIC_FIELDS
)
HOUR_ROLLUP: Final = f"""
WITH touched AS (
    SELECT m.* FROM samples_minute m JOIN gateways g ON g.id = m.gateway
    WHERE g.rollup_from IS NOT NULL AND m.bucket >= floor(g.rollup_from / 3600) * 3600
), base AS (
    SELECT gateway, battery, floor(bucket / 3600) * 3600 AS hour, sum(n) AS n, {_WEIGHTED}
    FROM touched GROUP BY 1, 2, 3
), per_cell AS (
    SELECT t.gateway, t.battery, floor(t.bucket / 3600) * 3600 AS hour, c.i, min(c.lo) AS lo,
        sum(c.mean * t.n) / sum(CASE WHEN c.mean IS NOT NULL THEN t.n END) AS mean, max(c.hi) AS hi
    FROM touched t
    CROSS JOIN LATERAL unnest(t.cells_min, t.cells_avg, t.cells_max) WITH ORDINALITY AS c (lo, mean, hi, i)
    GROUP BY 1, 2, 3, 4
), cells AS (
    SELECT gateway, battery, hour, array_agg(lo ORDER BY i) AS lo, array_agg(mean ORDER BY i) AS mean,
        array_agg(hi ORDER BY i) AS hi
    FROM per_cell GROUP BY 1, 2, 3
)
INSERT INTO samples_hour (gateway, battery, bucket, n, {ROLLUP_FIELDS_SQL}, cells_min, cells_avg, cells_max)
SELECT base.*, cells.lo, cells.mean, cells.hi FROM base LEFT JOIN cells USING (gateway, battery, hour)
ON CONFLICT (gateway, battery, bucket) DO UPDATE SET {_UPDATE_ROLLUP}
"""

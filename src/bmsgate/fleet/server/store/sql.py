"""SQL text and result shaping both backends share (the tables are the same; only placeholders differ)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from bmsgate.fleet.server.store.repository import (
    CELL_VOLTAGES,
    NUMERIC_FIELDS,
    AlarmFilter,
    AlarmState,
    Resolution,
    SeriesPoint,
)
from bmsgate.fleet.server.store.rows import ALARM_COLUMNS, GATEWAY_COLUMNS, SAMPLE_COLUMNS, cell_index

_Row = TypeVar("_Row")

__all__ = [
    "EXPORT_TABLES",
    "ROLLUP_COLUMNS",
    "ROLLUP_FIELDS_SQL",
    "alarm_filter_sql",
    "newest_oldest_first",
    "series_points",
    "table_columns",
]

ROLLUP_COLUMNS: Final = tuple(f"{field}_{stat}" for field in NUMERIC_FIELDS for stat in ("min", "avg", "max"))
ROLLUP_FIELDS_SQL: Final = ", ".join(ROLLUP_COLUMNS)

EXPORT_TABLES: Final[dict[str, tuple[str, ...]]] = {
    # What the registry reads, and two bookkeeping columns only an export must carry.
    "gateways": (*GATEWAY_COLUMNS, "state_at", "rollup_from"),
    "batteries": ("gateway", "battery", "at", "age_s", "stale", "snapshot"),
    "samples": SAMPLE_COLUMNS,
    "samples_minute": ("gateway", "battery", "bucket", "n", *ROLLUP_COLUMNS, "cells_min", "cells_avg", "cells_max"),
    "samples_hour": ("gateway", "battery", "bucket", "n", *ROLLUP_COLUMNS, "cells_min", "cells_avg", "cells_max"),
    "events": ("gateway", "seq", "at", "kind", "battery", "alarm", "detail", "data", "received_at"),
    "alarms": ALARM_COLUMNS,
    "alarm_history": ("id", "alarm_id", "at", "action", "actor", "detail"),
    # Rollouts (migration 0002; bmsgate.fleet.server.rollouts.store). desired_states carries each gateway's
    # generation: a copy that lost it would make every gateway refuse the next desired state as a replay.
    "rollouts": (
        "id",
        "created_at",
        "created_by",
        "state",
        "reason",
        "spec",
        "progress",
        "updated_at",
        "revision",
        "write_token",
    ),
    "rollout_members": (
        "rollout_id",
        "gateway",
        "group_index",
        "jitter_s",
        "phase",
        "outcome",
        "reason",
        "detail",
        "generation",
        "published_at",
        "clock_started_at",
        "reported_at",
        "target",
        "previous",
    ),
    "desired_states": ("gateway", "generation", "rollout_id", "issued_at", "envelope"),
    "rollout_audit": ("id", "rollout_id", "at", "actor", "role", "action", "detail"),
}
"""Every table with its columns, in dependency order (what an export writes and an import reads)."""

_ROLLUP_TABLES: Final = {Resolution.MINUTE: "samples_minute", Resolution.HOUR: "samples_hour"}


def table_columns(resolution: Resolution, field: str) -> tuple[str, str, str]:
    """``(table, time column, value columns)`` of a series query (`field` already validated)."""
    cells = field == CELL_VOLTAGES or cell_index(field) is not None
    if resolution is Resolution.RAW:
        return "samples", "at", "cells" if cells else field
    table = _ROLLUP_TABLES[resolution]
    if cells:
        return table, "bucket", "n, cells_min, cells_avg, cells_max"
    return table, "bucket", f"n, {field}_min, {field}_avg, {field}_max"


def newest_oldest_first(rows: Sequence[_Row], limit: int) -> tuple[list[_Row], bool]:
    """The newest `limit` of `rows` (fetched newest first, ``limit + 1`` of them), oldest first.

    A range with more points than the limit loses its oldest ones, never the newest (what is
    looked at first); the flag says whether any were left out.
    """
    kept = list(rows[:limit])
    kept.reverse()
    return kept, len(rows) > limit


def series_points(
    resolution: Resolution,
    field: str,
    rows: Sequence[Sequence[Any]],
    decode_cells: Callable[[Any], tuple[float | None, ...]],
) -> tuple[SeriesPoint, ...]:
    """Points from the rows of :func:`table_columns`' query."""
    index = cell_index(field)
    is_cells = field == CELL_VOLTAGES or index is not None

    def shape(value: Any) -> Any:
        if not is_cells:
            return value
        cells = decode_cells(value) if value is not None else ()
        if index is None:
            return cells
        return cells[index] if index < len(cells) else None

    points = []
    if resolution is Resolution.RAW:
        for at, value in rows:
            shaped = shape(value)
            points.append(SeriesPoint(at=at, avg=shaped, min=shaped, max=shaped, count=1))
    else:
        for at, count, low, mean, high in rows:
            points.append(SeriesPoint(at=at, avg=shape(mean), min=shape(low), max=shape(high), count=count))
    return tuple(points)


def alarm_filter_sql(alarm_filter: AlarmFilter, placeholder: str) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of an alarm list query."""
    clauses: list[str] = []
    parameters: list[Any] = []
    if alarm_filter.state is AlarmState.OPEN and not alarm_filter.only_state:
        clauses.append("state <> 'closed'")
    elif alarm_filter.state is not None:
        clauses.append(f"state = {placeholder}")
        parameters.append(alarm_filter.state.value)
    if alarm_filter.gateway is not None:
        clauses.append(f"gateway = {placeholder}")
        parameters.append(alarm_filter.gateway)
    if alarm_filter.since is not None:
        clauses.append(f"opened_at >= {placeholder}")
        parameters.append(alarm_filter.since)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", parameters

"""The JSON shapes of the API, built from the store's records (pure: no web framework here).

They are dataclasses so that the OpenAPI document describes every field. A gateway's overview values
(``soc``: the mean over its batteries that report one; ``cell_delta``: the largest of its batteries, in V)
are computed here once, so the dashboard sorts and filters 10,000 sites without looking into snapshots.

A battery's ``age_s`` and ``stale`` are of the moment the view is built, not of the message that brought
the reading: the stored age plus the time since (so a gateway that went silent shows its batteries
stale once their budget passed).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bmsgate.fleet.server.store.repository import (
    AlarmRecord,
    BatteryRecord,
    GatewayRecord,
    LocationRecord,
    PackRecord,
    Series,
)

_STALE_INTERVALS: Final = 3.0  # like the "no data" alarm: three intervals of silence
_STALE_MIN_S: Final = 60.0
_DEFAULT_INTERVAL_S: Final = 60.0  # a gateway that never sent its state (interval unknown)

__all__ = [
    "AlarmList",
    "AlarmView",
    "BatteryView",
    "CommandAccepted",
    "GatewayList",
    "GatewayView",
    "Health",
    "LocationView",
    "PackView",
    "SeriesView",
    "SessionView",
    "alarm_view",
    "gateway_view",
    "series_view",
    "stale_budget",
]


@dataclasses.dataclass(frozen=True, slots=True)
class PackView:
    """One data file or software artifact the gateway runs."""

    kind: str
    name: str
    version: str | None
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True)
class LocationView:
    """The last reported location; ``lat``/``lon`` are null when ``fix`` is ``none`` (GPS lost)."""

    lat: float | None
    lon: float | None
    fix: str
    source: str
    time: float | None
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class BatteryView:
    """The latest reading of one battery: ``snapshot`` is the snapshot JSON form (docs/snapshot-json.md)."""

    id: str
    name: str | None
    protocol: str | None
    at: float | None
    """Sampling time of the message the reading came in (the gateway's clock)."""
    age_s: float | None
    """Age of the reading now: its age at ``at`` plus the time since (None: never reported)."""
    stale: bool
    """The gateway marked it stale, it never reported, or ``age_s`` is over ``stale_after_s``."""
    snapshot: dict[str, Any] | None
    stale_after_s: float
    """The budget: a reading older than this is stale (a few telemetry intervals of the gateway)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AlarmView:
    """One alarm: open → acknowledged (optional) → closed."""

    id: int
    gateway: str
    battery: str | None
    kind: str
    severity: str
    state: str
    message: str
    value: float | None
    opened_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    closed_at: float | None
    closed_by: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayView:
    """One gateway (site). ``batteries`` and ``inverter`` are left out (null) in the summary form."""

    id: str
    name: str | None
    site: str | None
    tags: list[str]
    hardware: str
    online: bool
    last_seen: float | None
    software_version: str | None
    location: LocationView | None
    packs: list[PackView]
    open_alarms: int
    worst_severity: str | None
    soc: float | None
    """Mean state of charge (%) over the batteries that report one."""
    cell_delta: float | None
    """The largest cell voltage delta (V) among its batteries."""
    interval_s: float | None
    uptime_s: float | None
    buffer_queued: int
    buffer_dropped: int
    batteries: list[BatteryView] | None = None
    inverter: dict[str, Any] | None = None
    inverter_at: float | None = None
    alarms: list[AlarmView] | None = None
    """The detail form only: the site's recent alarms, newest first."""


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayList:
    """Every gateway, sorted by id."""

    gateways: list[GatewayView]
    total: int


@dataclasses.dataclass(frozen=True, slots=True)
class AlarmList:
    """Alarms, newest first."""

    alarms: list[AlarmView]
    total: int


@dataclasses.dataclass(frozen=True, slots=True)
class SeriesView:
    """A time series, oldest first. Each point is ``[at, avg, min, max, count]``.

    For raw samples min = avg = max and count is 1; for rollups ``at`` is the start of the bucket. For
    ``cell_voltages`` the three values are lists, cell 1 first.
    """

    gateway: str
    battery: str
    field: str
    resolution: str
    points: list[tuple[float, Any, Any, Any, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class SessionView:
    """Who the caller is, and the dashboard's settings."""

    token_id: str
    role: str
    label: str
    tile_url: str | None
    tile_attribution: str


@dataclasses.dataclass(frozen=True, slots=True)
class CommandAccepted:
    """A command handed to the broker (the gateway answers with a ``command_done`` / ``command_rejected`` event)."""

    id: str
    gateway: str
    kind: str
    issued_at: float
    expires_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    """Liveness: answered without a token."""

    status: str
    store: str
    live_subscribers: int


def _pack(record: PackRecord) -> PackView:
    return PackView(record.kind, record.name, record.version, record.sha256)


def _location(record: LocationRecord | None) -> LocationView | None:
    if record is None:
        return None
    return LocationView(record.lat, record.lon, record.fix, record.source, record.time, record.received_at)


def stale_budget(interval_s: float | None) -> float:
    """How old a battery reading may be before it counts as stale, for a gateway's telemetry interval."""
    return max(_STALE_INTERVALS * (interval_s or _DEFAULT_INTERVAL_S), _STALE_MIN_S)


def _battery(record: BatteryRecord, *, now: float, last_seen: float | None, budget: float) -> BatteryView:
    snapshot = dict(record.snapshot) if record.snapshot is not None else None
    age_s = record.age_s
    if age_s is not None and record.at is not None:
        # `at` is the gateway's clock; when it is ahead of ours, the server's receipt time bounds it instead
        # (so a silent gateway still ages, and nothing is "0 s ago" for a time in the future).
        reference = record.at if last_seen is None else min(record.at, last_seen)
        age_s += max(0.0, now - reference)
    stale = record.stale or age_s is None or age_s > budget
    return BatteryView(record.id, record.name, record.protocol, record.at, age_s, stale, snapshot, budget)


def _number(snapshot: Mapping[str, Any] | None, key: str) -> float | None:
    if snapshot is None:
        return None
    value = snapshot.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def alarm_view(record: AlarmRecord) -> AlarmView:
    """The JSON shape of one alarm."""
    return AlarmView(
        id=record.id,
        gateway=record.gateway,
        battery=record.battery,
        kind=record.kind,
        severity=record.severity.label,
        state=record.state.value,
        message=record.message,
        value=record.value,
        opened_at=record.opened_at,
        acknowledged_at=record.acknowledged_at,
        acknowledged_by=record.acknowledged_by,
        closed_at=record.closed_at,
        closed_by=record.closed_by,
    )


def gateway_view(
    record: GatewayRecord,
    *,
    summary: bool = False,
    alarms: Sequence[AlarmRecord] | None = None,
    now: float | None = None,
) -> GatewayView:
    """The JSON shape of one gateway: the summary leaves out batteries and inverter (the overview's form).

    Args:
        record: the gateway as stored.
        summary: leave out batteries and inverter.
        alarms: its recent alarms (the detail form).
        now: the time the batteries' age and staleness are computed for (default: the current time).
    """
    moment = time.time() if now is None else now
    budget = stale_budget(record.interval_s)
    socs = [soc for battery in record.batteries if (soc := _number(battery.snapshot, "soc")) is not None]
    deltas = [delta for battery in record.batteries if (delta := _number(battery.snapshot, "cell_delta")) is not None]
    return GatewayView(
        id=record.id,
        name=record.name,
        site=record.site,
        tags=list(record.tags),
        hardware=record.hardware,
        online=record.online,
        last_seen=record.last_seen,
        software_version=record.software_version,
        location=_location(record.location),
        packs=[_pack(pack) for pack in record.packs],
        open_alarms=record.open_alarms,
        worst_severity=record.worst_severity.label if record.worst_severity is not None else None,
        soc=sum(socs) / len(socs) if socs else None,
        cell_delta=max(deltas) if deltas else None,
        interval_s=record.interval_s,
        uptime_s=record.uptime_s,
        buffer_queued=record.buffer_queued,
        buffer_dropped=record.buffer_dropped,
        batteries=None
        if summary
        else [_battery(battery, now=moment, last_seen=record.last_seen, budget=budget) for battery in record.batteries],
        inverter=None if summary or record.inverter is None else dict(record.inverter),
        inverter_at=None if summary else record.inverter_at,
        alarms=None if alarms is None else [alarm_view(alarm) for alarm in alarms],
    )


def series_view(series: Series) -> SeriesView:
    """The JSON shape of a series."""
    return SeriesView(
        gateway=series.gateway,
        battery=series.battery,
        field=series.field,
        resolution=series.resolution.value,
        points=[(point.at, point.avg, point.min, point.max, point.count) for point in series.points],
    )

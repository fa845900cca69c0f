"""Builders of fleet protocol messages for the store, ingest and alarm tests (and the benchmark)."""

from __future__ import annotations

from typing import Any

from bmsgate.fleet.protocol import (
    BatteryDescriptor,
    BatteryReading,
    EventKind,
    EventMessage,
    Location,
    LocationFix,
    PackVersion,
    StateMessage,
    TelemetryMessage,
    compact_snapshot,
)
from bmsgate.model import Alarm, BatterySnapshot

T0 = 1_800_000_000.0
"""A round Unix time (2027-01-15) the tests start at."""


def snapshot(
    battery: str = "b1",
    at: float = T0,
    *,
    cells: int = 16,
    soc: float = 80.0,
    delta: float = 0.01,
    temperature: float = 25.0,
    alarms: frozenset[Alarm] = frozenset(),
) -> BatterySnapshot:
    voltages = tuple(round(3.3 + delta * index / max(cells - 1, 1), 4) for index in range(cells))
    return BatterySnapshot(
        battery_id=battery,
        timestamp=at,
        protocol="jbd",
        voltage=round(sum(voltages), 3),
        current=-10.0,
        soc=soc,
        soh=98.0,
        remaining_capacity=160.0,
        full_capacity=200.0,
        cycles=42,
        cell_voltages=voltages,
        temperatures=(temperature, temperature + 1.0),
        mosfet_temperature=30.0,
        alarms=alarms,
    )


def state(
    gateway: str = "gw-1",
    *,
    sent_at: float = T0,
    lat: float | None = -33.92,
    lon: float | None = 18.42,
    fix: LocationFix = LocationFix.FIX_3D,
    interval_s: float = 10.0,
    software_version: str = "1.2.0",
    batteries: tuple[str, ...] = ("b1",),
) -> StateMessage:
    location = Location(source="gpsd", fix=fix, lat=lat, lon=lon, time=sent_at) if fix is not LocationFix.NONE else None
    if fix is LocationFix.NONE:
        location = Location(source="gpsd", fix=fix)
    return StateMessage(
        v=1,
        gateway=gateway,
        sent_at=sent_at,
        software_version=software_version,
        hardware="rpi4",
        uptime_s=100.0,
        name=f"Site {gateway}",
        site="Cape Town",
        tags=["demo"],
        interval_s=interval_s,
        packs=[PackVersion(kind="protocol", name="jbd", version="3", sha256="a" * 64)],
        location=location,
        batteries=[BatteryDescriptor(id=battery, name=f"Pack {battery}", protocol="jbd") for battery in batteries],
    )


def telemetry(
    gateway: str = "gw-1",
    at: float = T0,
    *,
    seq: int = 1,
    snapshots: tuple[BatterySnapshot, ...] | None = None,
    stale: bool = False,
    inverter: dict[str, Any] | None = None,
    backfill: bool = False,
) -> TelemetryMessage:
    snapshots = snapshots if snapshots is not None else (snapshot(at=at),)
    return TelemetryMessage(
        v=1,
        gateway=gateway,
        seq=seq,
        at=at,
        backfill=backfill,
        batteries=[
            BatteryReading(id=item.battery_id, age_s=0.5, stale=stale, snapshot=compact_snapshot(item))
            for item in snapshots
        ],
        inverter=inverter if inverter is not None else {"charge_voltage": 55.2, "charge_current": 100.0},
    )


def event(
    gateway: str = "gw-1",
    at: float = T0,
    *,
    seq: int = 1,
    kind: EventKind = EventKind.ALARM_RAISED,
    battery: str | None = "b1",
    alarm: str | None = "cell_overvoltage",
) -> EventMessage:
    return EventMessage(v=1, gateway=gateway, seq=seq, at=at, kind=kind, battery=battery, alarm=alarm, detail="test")

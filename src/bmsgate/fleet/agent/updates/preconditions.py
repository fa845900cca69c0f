"""VRM-style preconditions for a change the inverter sees: no active alarms and fresh data on the batteries."""

from __future__ import annotations

from collections.abc import Iterable

from bmsgate.runtime.hub import SnapshotHub

__all__ = ["unmet_precondition"]


def unmet_precondition(hub: SnapshotHub, batteries: Iterable[str]) -> str | None:
    """Why the change must wait now (None: every battery has fresh data and no active alarm)."""
    for battery_id in sorted(batteries):
        snapshot = hub.latest(battery_id)
        if snapshot is None:
            return f"battery {battery_id}: no data yet"
        if hub.is_stale(battery_id):
            return f"battery {battery_id}: data is stale ({hub.age(battery_id) or 0:.0f} s old)"
        if snapshot.alarms:
            names = ", ".join(sorted(str(alarm) for alarm in snapshot.alarms))
            return f"battery {battery_id}: active alarms ({names})"
    return None

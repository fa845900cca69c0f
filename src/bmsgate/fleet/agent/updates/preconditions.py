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
            # No age in the text: the engine reports (and journals) a precondition again only when it changes.
            return f"battery {battery_id}: data is stale (no fresh poll within {hub.stale_after(battery_id):g} s)"
        if snapshot.alarms:
            names = ", ".join(sorted(str(alarm) for alarm in snapshot.alarms))
            return f"battery {battery_id}: active alarms ({names})"
    return None

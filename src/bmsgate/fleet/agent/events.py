"""What is worth an event: battery online/offline, alarms raised/cleared, location lost/fixed. Pure.

The tracker compares each hub update (and each location) with what it saw before and returns the
changes; the agent numbers, stores and sends them. A battery that never reported is neither online
nor offline: its first fresh snapshot makes it ``battery_online``.
"""

from __future__ import annotations

import dataclasses

from bmsgate.fleet.protocol import EventKind, Location, LocationFix
from bmsgate.model import Alarm, BatterySnapshot

__all__ = ["EventTracker", "PendingEvent"]


@dataclasses.dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event before it has a sequence number."""

    kind: EventKind
    battery: str | None = None
    alarm: str | None = None
    detail: str = ""
    data: dict[str, str | int | float | bool | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class _Seen:
    online: bool | None = None
    alarms: frozenset[Alarm] = frozenset()


class EventTracker:
    """Turns state into change events."""

    def __init__(self) -> None:
        self._batteries: dict[str, _Seen] = {}
        self._location_fix: bool | None = None

    def battery(self, battery_id: str, snapshot: BatterySnapshot | None, *, stale: bool) -> list[PendingEvent]:
        """Events for one battery's new state (snapshot and staleness as the hub says)."""
        seen = self._batteries.setdefault(battery_id, _Seen())
        events: list[PendingEvent] = []
        if snapshot is None:
            return events
        online = not stale
        if online != seen.online and (seen.online is not None or online):
            kind = EventKind.BATTERY_ONLINE if online else EventKind.BATTERY_OFFLINE
            detail = "" if online else "no fresh data (stale)"
            events.append(PendingEvent(kind, battery=battery_id, detail=detail))
            seen.online = online
        if online:
            events.extend(
                PendingEvent(EventKind.ALARM_RAISED, battery=battery_id, alarm=alarm.value)
                for alarm in sorted(snapshot.alarms - seen.alarms)
            )
            events.extend(
                PendingEvent(EventKind.ALARM_CLEARED, battery=battery_id, alarm=alarm.value)
                for alarm in sorted(seen.alarms - snapshot.alarms)
            )
            seen.alarms = snapshot.alarms
        return events

    def removed(self, battery_id: str) -> list[PendingEvent]:
        """A battery removed from the configuration at run time."""
        if self._batteries.pop(battery_id, None) is None:
            return []
        return [PendingEvent(EventKind.CONFIG_APPLIED, battery=battery_id, detail="battery removed")]

    def location(self, location: Location) -> list[PendingEvent]:
        """Events for a new location: ``location_lost`` when the fix goes, ``location_fixed`` when it comes."""
        has_fix = location.fix is not LocationFix.NONE
        if has_fix == self._location_fix:
            return []
        self._location_fix = has_fix
        if has_fix:
            return [PendingEvent(EventKind.LOCATION_FIXED, data={"lat": location.lat, "lon": location.lon})]
        return [PendingEvent(EventKind.LOCATION_LOST, detail=f"{location.source}: no position fix")]

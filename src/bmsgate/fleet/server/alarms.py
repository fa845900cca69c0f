"""The alarm engine: opens and closes alarms from what ingest stored, and on silence.

It watches committed batches (it is an ingest :class:`~bmsgate.fleet.server.ingest.BatchObserver`) and runs
a periodic check:

- **no data**: a gateway silent for longer than ``no_data_factor`` × its telemetry interval;
- **BMS alarms**: ``alarm_raised`` / ``alarm_cleared`` events and the alarm set of each fresh snapshot
  (``bms:<alarm>``; a protection is critical);
- **thresholds with hysteresis**: low SoC, cell drift (cell voltage delta), high and low temperature
  (:mod:`.alarm_rules`);
- **geofence**: the site moved beyond a radius from its home position; **GPS lost**: fix ``none``,
  a ``location_lost`` event, or a measured position older than ``location_stale_s``.

Each alarm is stored with its history (open → acknowledged → closed), published on the live feed and handed
to the notifier. Observing a batch only queues it (bounded; the oldest is dropped and counted when the
engine falls behind), so alarms never slow ingest down.

In cluster mode the engine runs only while its process leads (:mod:`.leadership`), and a process may lead
several times. Each queued batch carries the leadership term it was observed in; a batch taken from the
queue in a later term is dropped (counted in ``stale_batches``): it was queued before another leader ran the
rules on newer data, and evaluating it now would act on that old state (reopen an alarm another leader closed
meanwhile, close one on old readings). A new term starts from the open alarms in the store and new batches.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from bmsgate.fleet.protocol import EventKind, LocationFix, StateMessage, TelemetryMessage
from bmsgate.fleet.server.alarm_rules import (
    BMS_PREFIX,
    AlarmSettings,
    Decision,
    Kind,
    bms_kind,
    bms_severity,
    distance_m,
    threshold_rules,
)
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.notify import Notifier
from bmsgate.fleet.server.store.repository import (
    AlarmFilter,
    AlarmRecord,
    AlarmState,
    Availability,
    GatewayRecord,
    IngestBatch,
    NewAlarm,
    Repository,
    Severity,
    StoreError,
    UnknownRecord,
    WriteResult,
)
from bmsgate.fleet.server.store.snapshots import read_snapshot

__all__ = ["AlarmEngine"]

_log = logging.getLogger(__name__)
_Key = tuple[str, str | None, str]
"""``(gateway, battery, kind)``."""
_GATEWAY_WIDE: Final = None


def _single_term() -> int:
    return 0


class AlarmEngine:
    """Evaluates the rules; ``await run()`` until cancelled."""

    def __init__(
        self,
        store: Repository,
        *,
        settings: AlarmSettings | None = None,
        feed: LiveFeed | None = None,
        notifier: Notifier | None = None,
        term: Callable[[], int] | None = None,
    ) -> None:
        """Set the engine up (it starts with :meth:`run`).

        Args:
            store: where alarms are read and written.
            settings: the rules' thresholds and the queue's bound.
            feed: where opened and closed alarms are announced.
            notifier: who is told about them.
            term: the current leadership term (:attr:`.leadership.Leadership.terms`); a queued batch observed
                in another term than the current one is dropped, not evaluated. None: always one term.
        """
        self.store = store
        settings = settings or AlarmSettings()
        self.settings = settings
        self.feed = feed
        self.notifier = notifier
        self._rules = threshold_rules(settings)
        self._term = term or _single_term
        self._pending: collections.deque[tuple[int, IngestBatch]] = collections.deque(maxlen=settings.queue_limit)
        self._wake = asyncio.Event()
        self._active: dict[_Key, int] = {}
        self.dropped_batches = 0
        """Batches dropped because the engine fell behind."""
        self.stale_batches = 0
        """Batches dropped unevaluated because they were queued in an earlier leadership term."""
        self.failed_batches = 0
        """Batches whose evaluation failed (store error or a bug, logged); the engine goes on with the next."""
        self.opened = 0
        self.closed = 0
        self.ready = asyncio.Event()
        """Set once the open alarms are loaded (batches observed before are kept and evaluated then)."""

    # -- input -----------------------------------------------------------------------------------------

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        """Queue a committed batch (never blocks)."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped_batches += 1
        self._pending.append((self._term(), batch))
        self._wake.set()

    async def run(self) -> None:
        """Load the open alarms, then evaluate batches and the periodic checks until cancelled."""
        await self._load()
        self.ready.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._batches(), name="alarms-batches")
            group.create_task(self._periodic(), name="alarms-periodic")

    async def _load(self) -> None:
        self._active.clear()  # a process that leads again (cluster mode): another leader changed them meanwhile
        for alarm in await self.store.list_alarms(AlarmFilter(state=AlarmState.OPEN, limit=1_000_000)):
            self._active[alarm.gateway, alarm.battery, alarm.kind] = alarm.id

    async def _batches(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                term, batch = self._pending.popleft()
                if term != self._term():
                    self.stale_batches += 1
                    continue
                try:
                    await self.evaluate_batch(batch)
                except StoreError as exc:
                    self.failed_batches += 1
                    _log.warning("alarms: store failed while evaluating a batch: %s", exc)
                except Exception:  # noqa: BLE001 - one hostile message must not stop every alarm of the fleet
                    self.failed_batches += 1
                    _log.exception("alarms: evaluating a batch failed; going on with the next")

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval_s)
            try:
                await self.check(time.time())
            except StoreError as exc:
                _log.warning("alarms: periodic check failed: %s", exc)
            except Exception:  # noqa: BLE001 - a bug in one check must not end the periodic checks
                _log.exception("alarms: periodic check failed")

    # -- evaluation ------------------------------------------------------------------------------------

    async def evaluate_batch(self, batch: IngestBatch) -> None:
        """Apply the rules to one committed batch."""
        for message, received in batch.telemetry:
            await self._telemetry(message, received)
        for event, _ in batch.events:
            kind = bms_kind(event.alarm or "") if self.settings.bms_alarms else None
            if event.kind is EventKind.ALARM_RAISED and kind is not None:
                await self._open(event.gateway, event.battery, kind, bms_severity(kind), event.detail or kind, event.at)
            elif event.kind is EventKind.ALARM_CLEARED and kind is not None:
                await self._close(event.gateway, event.battery, kind, event.at)
            elif event.kind is EventKind.LOCATION_LOST:
                await self._open(event.gateway, None, Kind.GPS_LOST, Severity.WARNING, "GPS lost", event.at)
            elif event.kind is EventKind.LOCATION_FIXED:
                await self._close(event.gateway, None, Kind.GPS_LOST, event.at)
        for state, received in batch.states:
            await self._state(state, received or time.time())
        for event, received in batch.events:
            await self._close(event.gateway, None, Kind.NO_DATA, received)
        for gateway, availability, received in batch.availability:
            # Only the gateway's own "online" (not retained) is a sign of life; "offline" is its last will.
            if received and availability is Availability.ONLINE:
                await self._close(gateway, None, Kind.NO_DATA, received)

    async def _telemetry(self, message: TelemetryMessage, received: float) -> None:
        gateway = message.gateway
        await self._close(gateway, None, Kind.NO_DATA, received)
        for reading in message.batteries:
            if reading.stale or reading.snapshot is None:
                continue  # stale data is not evidence of anything now
            try:
                # reading.to_snapshot()'s result, a fifth of its cost (ingest's reader, held to it by tests)
                snapshot = read_snapshot(reading.snapshot)
            except (ValueError, TypeError, ArithmeticError):
                continue  # counted by the store as a rejected snapshot already
            values: Mapping[str, Any] = {
                "soc": snapshot.soc,
                "cell_delta": snapshot.cell_delta,
                "temperature_max": snapshot.temperature_max,
                "temperature_min": snapshot.temperature_min,
            }
            for rule, key in self._rules:
                value = values[key]
                active = (gateway, reading.id, rule.kind.value) in self._active
                decision = rule.decide(value, active)
                if decision is Decision.OPEN:
                    await self._open(
                        gateway, reading.id, rule.kind, rule.severity, rule.message(value), message.at, value
                    )
                elif decision is Decision.CLOSE:
                    await self._close(gateway, reading.id, rule.kind, message.at)
            if self.settings.bms_alarms:
                await self._bms_set(
                    gateway, reading.id, {bms_kind(alarm.value) for alarm in snapshot.alarms}, message.at
                )

    async def _bms_set(self, gateway: str, battery: str, kinds: set[str | None], at: float) -> None:
        current = {kind for kind in kinds if kind is not None}
        for kind in current:
            await self._open(gateway, battery, kind, bms_severity(kind), kind.removeprefix(BMS_PREFIX), at)
        for active_gateway, active_battery, kind in list(self._active):
            same = (active_gateway, active_battery) == (gateway, battery)
            if same and kind.startswith(BMS_PREFIX) and kind not in current:
                await self._close(gateway, battery, kind, at)

    async def _state(self, state: StateMessage, received: float) -> None:
        location = state.location
        if location is None:
            return
        if location.fix is LocationFix.NONE:
            await self._open(state.gateway, None, Kind.GPS_LOST, Severity.WARNING, "GPS lost (no fix)", received)
            return
        await self._close(state.gateway, None, Kind.GPS_LOST, received)
        try:
            record = await self.store.get_gateway(state.gateway)
        except UnknownRecord:
            return
        await self._geofence(record, received)

    async def _geofence(self, record: GatewayRecord, at: float) -> None:
        location = record.location
        if record.home is None or location is None or location.lat is None or location.lon is None:
            return
        distance = distance_m(record.home, (location.lat, location.lon))
        radius = self.settings.geofence_radius_m
        active = (record.id, None, Kind.GEOFENCE.value) in self._active
        if not active and distance > radius:
            message = f"site moved {distance:.0f} m from its home position (limit {radius:.0f} m)"
            await self._open(record.id, None, Kind.GEOFENCE, Severity.CRITICAL, message, at, distance)
        elif active and distance <= radius * self.settings.geofence_close_fraction:
            await self._close(record.id, None, Kind.GEOFENCE, at)

    async def check(self, now: float) -> None:
        """The periodic checks: silent gateways and stale measured locations."""
        settings = self.settings
        for record in await self.store.list_gateways():
            if record.last_seen is not None and record.interval_s is not None:
                limit = max(settings.no_data_factor * record.interval_s, settings.no_data_min_s)
                silent = now - record.last_seen
                if silent > limit:
                    message = f"no data for {silent:.0f} s (expected every {record.interval_s:g} s)"
                    await self._open(record.id, None, Kind.NO_DATA, Severity.CRITICAL, message, now, silent)
            location = record.location
            if location is not None and location.source != "config" and location.fix != LocationFix.NONE.value:
                age = now - location.received_at
                if record.online and age > settings.location_stale_s:
                    await self._open(
                        record.id, None, Kind.GPS_LOST, Severity.WARNING, f"no position for {age:.0f} s", now
                    )

    # -- opening and closing ---------------------------------------------------------------------------

    async def _open(
        self,
        gateway: str,
        battery: str | None,
        kind: str,
        severity: Severity,
        message: str,
        at: float,
        value: float | None = None,
    ) -> None:
        key = (gateway, battery, str(kind))
        if key in self._active:
            return
        alarm, created = await self.store.open_alarm(
            NewAlarm(
                gateway=gateway, battery=battery, kind=str(kind), severity=severity, message=message, at=at, value=value
            )
        )
        self._active[key] = alarm.id
        if created:
            self.opened += 1
            _log.info("alarm opened: %s %s %s: %s", gateway, battery or "-", kind, message)
            self._announce(alarm, "opened")

    async def _close(self, gateway: str, battery: str | None, kind: str, at: float) -> None:
        alarm_id = self._active.pop((gateway, battery, str(kind)), None)
        if alarm_id is None:
            return
        try:
            alarm = await self.store.close_alarm(alarm_id, at, detail="condition cleared")
        except UnknownRecord:
            return  # deleted by an admin meanwhile
        self.closed += 1
        self._announce(alarm, "closed")

    def forget(self, alarm_id: int) -> None:
        """Drop an alarm closed or deleted through the API from the active set (so it can open again)."""
        for key, active_id in list(self._active.items()):
            if active_id == alarm_id:
                del self._active[key]

    def _announce(self, alarm: AlarmRecord, action: str) -> None:
        if self.feed is not None:
            data = {**alarm.to_dict(), "action": action}
            self.feed.publish(LiveUpdate(kind=LiveKind.ALARM, gateway=alarm.gateway, at=time.time(), data=data))
        if self.notifier is not None:
            self.notifier.notify(alarm, action)

"""`CanSink`: the inverter bridge over CAN — the controller's status → profile frames → bus.

The bank and its limits come from the :class:`~bmsgate.inverter.controller.InverterController` (the
same status the Modbus output encodes); this sink only adds what is CAN's own: the keep → safe →
silent phase from the status's data age, force-charge requests, the frame schedule and the bus.

Two tasks share one state: the status watcher takes every new status (phase, force-charge requests)
and asks for an immediate frame set when things got less safe (a new alarm, a lower limit, a phase
change); the frames themselves are encoded only when a set goes out (or :attr:`CanSink.frames` is
read), from the newest status: eight packs bring eight statuses a second, one set goes out. The bus task owns the
bus, sends the frame set every period (push profiles) or answers each request frame (Growatt), and
watches the inverter's keep-alive. A bus failure (python-can error, bus-off) closes the bus and reopens
it with backoff; the status watcher carries on meanwhile, so the first frame set after a reopen is current.

Scheduling uses the event loop's clock; data ages and phases use the injectable `clock`, which must
be the controller's (and so the hub's) clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bmsgate.errors import ConfigError, SinkError
from bmsgate.inverter.can.bus import FrameBus, open_bus
from bmsgate.inverter.can.candump import CandumpWriter
from bmsgate.inverter.can.profiles import (
    CanFrame,
    CanProfile,
    HeldMeasurements,
    OutputPhase,
    Requests,
    build_frames,
    load_profile,
)
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.state import ForceChargeRequest, PhaseTracker
from bmsgate.inverter.controller import InverterController, StatusSubscription
from bmsgate.inverter.status import InverterLiveness, InverterStatus, expired
from bmsgate.model import Alarm
from bmsgate.runtime.backoff import Backoff
from bmsgate.runtime.cadence import tick_after
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.wakeup import Wakeup

__all__ = ["SAFE_HOLD_PERIODS", "CanSink"]

_LOGGER = logging.getLogger(__name__)

_INITIAL_BACKOFF: Final = 0.5
_EPSILON: Final = 1e-6
_UNDER_VOLTAGE: Final = frozenset({Alarm.CELL_UNDERVOLTAGE, Alarm.PACK_UNDERVOLTAGE})

_MAX_PENDING_REQUESTS: Final = 16
"""Unanswered request frames kept; an inverter asking faster than we answer must not grow a backlog."""

SAFE_HOLD_PERIODS: Final = 3
"""Frame periods the safe frame set is sent at least before the output may go silent."""

BusOpener = Callable[[CanSettings], FrameBus]


class CanSink:
    """Presents the battery bank to an inverter over CAN.

    Args:
        settings: the ``outputs.can`` configuration.
        controller: the inverter controller whose status this output encodes.
        profile: a compiled profile; loaded from ``settings.profile`` when omitted (the settings'
            quirk, manufacturer and period overrides are applied either way).
        bus_opener: opens the bus (tests inject fakes); defaults to :func:`~bmsgate.inverter.can.bus.open_bus`.
        clock: monotonic clock for data ages (default: the controller's, which is the hub's).
        wall_clock: Unix time for the candump log.

    Raises:
        DefinitionError: the profile or its DBC file is invalid.
        ConfigError: ``settings.log_file`` cannot be appended to (missing directory, a directory, no
            permission).
    """

    name = "can"

    def __init__(
        self,
        settings: CanSettings,
        controller: InverterController,
        *,
        profile: CanProfile | None = None,
        bus_opener: BusOpener | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        if settings.log_file is not None:
            _check_log_file(settings.log_file)
        self.controller = controller
        self._clock = clock or controller.clock
        self._wall_clock = wall_clock
        self._open = bus_opener or open_bus
        self.profile = self._customised(profile or load_profile(settings.profile))
        period = max(self.profile.period, self.profile.min_interval)
        self._phases = PhaseTracker(settings.silent_after, safe_hold=SAFE_HOLD_PERIODS * period)
        self._liveness = (
            controller.watch(
                InverterLiveness(
                    settings.keepalive_timeout, self._clock(), what=f"CAN frame {self.profile.liveness_id:#05x}"
                )
            )
            if self.profile.liveness_id is not None
            else None
        )
        self._force_charge = ForceChargeRequest(
            settings.force_charge_soc, settings.force_charge_ii_soc, settings.force_charge_hysteresis
        )
        self._status = controller.status
        self._requests = Requests()
        self._frames: list[CanFrame] = []
        self._frames_due = False
        """A status was taken since `_frames` were encoded."""
        self._held = HeldMeasurements()
        """Last known measurements, for profiles without "invalid" markers (see `hold_missing`)."""
        self._sent_signature: tuple[OutputPhase, frozenset[Alarm], float, float] | None = None
        self._urgent = Wakeup()
        self._hub: SnapshotHub | None = None
        self._requested = Wakeup()
        self._pending_requests = 0
        self.requests_dropped = 0
        self._listeners: list[Callable[[InverterStatus], None]] = []
        self._log: CandumpWriter | None = None
        self._failing = False
        self._healthy = False
        self.sent = asyncio.Event()
        """Set after every frame set put on the bus (cleared by whoever waits on it)."""
        self.frame_sets = 0
        self.frames_sent = 0
        self.bus_failures = 0
        self.last_sent: list[CanFrame] = []

    # -- what other outputs read --------------------------------------------------------------------

    @property
    def status(self) -> InverterStatus:
        """The status the frames were last encoded from (the controller's, unless it went stale here)."""
        return self._status

    @property
    def phase(self) -> OutputPhase:
        """Normal, safe, silent or waiting (the stale-data state machine)."""
        return self._phases.phase

    @property
    def inverter_present(self) -> bool | None:
        """Whether the inverter's keep-alive/request frames arrive (None: not yet decided / not watched)."""
        return self._status.inverter_present

    @property
    def frames(self) -> list[CanFrame]:
        """The frame set that would go out now (empty while silent)."""
        self._encode_if_due()
        return list(self._frames)

    def add_listener(self, callback: Callable[[InverterStatus], None]) -> None:
        """Call `callback` with every status encoded (it must return quickly and not raise)."""
        self._listeners.append(callback)

    def swap_item(self, item: object) -> object:
        """Encode with another profile from the next frame set on, without reopening the bus.

        The configuration's quirk, manufacturer and period overrides apply to the new profile too.

        Args:
            item: a compiled :class:`~bmsgate.inverter.can.profiles.CanProfile`.

        Returns:
            The profile used until now.

        Raises:
            ConfigError: `item` is not a CAN profile.
        """
        if not isinstance(item, CanProfile):
            raise ConfigError(f"a CAN output takes a CAN profile, not {type(item).__name__}", key_path="outputs.can")
        previous = self.profile
        self.profile = self._customised(item)
        if self.profile.request_id != previous.request_id or self.profile.mode != previous.mode:
            # Requests asked under the old profile are not this profile's to answer.
            self._pending_requests = 0
        if self._liveness is None and self.profile.liveness_id is not None:
            self._liveness = self.controller.watch(
                InverterLiveness(
                    self.settings.keepalive_timeout, self._clock(), what=f"CAN frame {self.profile.liveness_id:#05x}"
                )
            )
        self._encode_frames()
        _LOGGER.info("CAN: profile %s replaces %s", self.profile.name, previous.name)
        return previous

    def _customised(self, profile: CanProfile) -> CanProfile:
        settings = self.settings
        return profile.with_overrides(
            quirks=settings.quirk_overrides, manufacturer=settings.manufacturer, period=settings.period
        )

    # -- computing ----------------------------------------------------------------------------------

    def refresh(self) -> InverterStatus:
        """Encode the controller's latest status now: phase, requests and the frame set.

        A status older than the controller's ``status_timeout`` counts as stale here (the controller
        stopped): the safe frames go out, and silence follows as the data ages.

        Returns:
            The status the frames encode.
        """
        status = self._take_status()
        self._encode_frames()
        return status

    def _encode_frames(self) -> None:
        self._frames_due = False
        self._frames = build_frames(self.profile, self._status, self.phase, self._requests, held=self._held)

    def _encode_if_due(self) -> None:
        if self._frames_due:
            self._encode_frames()

    def _take_status(self) -> InverterStatus:
        """The controller's latest status, phase and requests, without encoding frames (see the module)."""
        now = self._clock()
        status = self.controller.status
        if status.age(now) > self.controller.settings.status_timeout:
            status = expired(status)
        self._status = status
        bank = status.bank
        phase = self._phases.update(bank, status.data_age_at(now), now=now)
        normal = phase is OutputPhase.NORMAL
        self._requests = self._force_charge.update(
            bank.soc if normal else None, under_voltage=normal and not bank.alarms.isdisjoint(_UNDER_VOLTAGE)
        )
        self._frames_due = True
        for listener in self._listeners:
            listener(status)
        return status

    def _signature(self) -> tuple[OutputPhase, frozenset[Alarm], float, float]:
        limits = self._status.limits
        return self.phase, self._status.bank.alarms, limits.charge_current, limits.discharge_current

    def _less_safe_than_sent(self) -> bool:
        """Whether the inverter must hear about the new state before the next period."""
        sent = self._sent_signature
        if sent is None:
            return bool(self.frames)
        phase, alarms, charge, discharge = self._signature()
        return (
            phase is not sent[0]
            or not alarms <= sent[1]
            or charge < sent[2] - _EPSILON
            or discharge < sent[3] - _EPSILON
        )

    # -- running ------------------------------------------------------------------------------------

    async def run(self, hub: SnapshotHub) -> None:
        """Encode the controller's status and transmit until cancelled (`hub`: only to see its poll rounds)."""
        self._hub = hub
        log = None
        if self.settings.log_file is not None:
            log = CandumpWriter(self.settings.log_file, self.settings.interface_name)
            log.open()
        self._log = log
        _LOGGER.info(
            "CAN: profile %s (%s) on %s %s%s",
            self.profile.name,
            self.profile.mode,
            self.settings.interface,
            self.settings.channel,
            " (dry run)" if self.settings.dry_run else "",
        )
        try:
            with self.controller.channel.subscribe() as subscription:
                self.refresh()
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._watch_status(subscription), name=f"{self.name}-status")
                    group.create_task(self._bus_loop(), name=f"{self.name}-bus")
        finally:
            self._log = None
            if log is not None:
                log.close()

    async def _watch_status(self, subscription: StatusSubscription) -> None:
        while True:
            await subscription.get()
            self._take_status()
            if self.profile.mode == "push" and self._less_safe_than_sent():
                self._urgent.set()

    async def _bus_loop(self) -> None:
        backoff = Backoff(_INITIAL_BACKOFF, max(_INITIAL_BACKOFF, self.settings.reopen_backoff_max))
        while True:
            self._healthy = False
            try:
                bus = self._open(self.settings)
            except SinkError as exc:
                self._report_failure(exc)
            else:
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._receive(bus), name=f"{self.name}-receive")
                        group.create_task(self._transmit(bus), name=f"{self.name}-transmit")
                except* SinkError as failures:
                    self._report_failure(failures.exceptions[0])
                finally:
                    await bus.close()
            if self._healthy:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    def _report_failure(self, exc: BaseException) -> None:
        self.bus_failures += 1
        if self._failing:
            _LOGGER.debug("CAN: bus still failing: %s", exc)
            return
        self._failing = True
        _LOGGER.warning("CAN: bus failed (%s); reopening with backoff", exc)

    async def _receive(self, bus: FrameBus) -> None:
        while True:
            frame = await bus.receive()
            # Read per frame: a swapped profile may listen for other ids.
            profile = self.profile
            request_id = profile.request_id if profile.mode == "request" else None
            if frame.arbitration_id == profile.liveness_id and self._liveness is not None:
                self._liveness.seen(self._clock())
            if frame.arbitration_id == request_id:
                # Counted, not just flagged: an event alone merges requests that arrive while an answer
                # is going out, and clearing it after a timed-out wait loses one that came meanwhile.
                if self._pending_requests < _MAX_PENDING_REQUESTS:
                    self._pending_requests += 1
                else:
                    self.requests_dropped += 1
                self._requested.set()

    async def _transmit(self, bus: FrameBus) -> None:
        # Each loop returns when a swapped profile changes the mode; the bus stays open meanwhile.
        while True:
            if self.profile.mode == "request":
                await self._answer_requests(bus)
            else:
                await self._push(bus)

    async def _push(self, bus: FrameBus) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        last_sent = -self.profile.min_interval
        while self.profile.mode == "push":
            min_interval = self.profile.min_interval
            period = max(self.profile.period, min_interval)
            urgent = await _wait_until(self._urgent, next_due)
            self._urgent.clear()
            # The regular grid already keeps `period` >= `min_interval`; only an urgent set may come early.
            wait_more = last_sent + min_interval - loop.time()
            held_for_round = False
            if urgent and wait_more > 0:
                await asyncio.sleep(wait_more)
            elif not urgent and self._hub is not None:
                # At the bank's poll tick: the set carries that round's values (runtime/rounds.py), not the
                # previous round's followed by an urgent set for the new ones.
                held_for_round = await self.controller.round_refreshed(self._hub)
            # This set takes the latest status: whatever made it urgent meanwhile goes out in it.
            self._urgent.clear()
            last_sent = loop.time()
            # Where this set belongs: its regular instant, or its own for an urgent one.
            due_at = last_sent if urgent else next_due
            self.refresh()
            await self._send(bus)
            # The shared grid (runtime/cadence.py) keeps the period free of drift and shares the wake-up
            # with the controller's tick. The next regular set is the next tick, but at least `min_interval`
            # after where this one belonged: after an urgent set that tick may come too soon, and so may the
            # one after a set that was itself pushed off the grid by that floor. Never more than `period`
            # after an urgent set, and `period` apart on the grid. A regular set held back for its poll round
            # went out up to the round's bound after its tick: then the floor counts from when it went out
            # (only then: counted from every send, a period equal to it would drift by the loop's latency).
            floor = last_sent if held_for_round else due_at
            next_due = max(tick_after(last_sent, period), floor + min_interval)

    async def _answer_requests(self, bus: FrameBus) -> None:
        while self.profile.mode == "request":
            if not self._pending_requests:
                # Cleared only with nothing pending and no await before the wait: no request slips by.
                self._requested.clear()
                await _wait_until(self._requested, tick_after(asyncio.get_running_loop().time(), self.profile.period))
            requested = self._pending_requests > 0
            if requested:
                self._pending_requests -= 1
            self.refresh()
            # A dry run has no inverter to ask: answer on the period so the log shows the frames.
            if requested or self.settings.dry_run:
                await self._send(bus)

    async def _send(self, bus: FrameBus) -> None:
        self._encode_if_due()
        frames = self._frames
        if not frames:
            return
        await bus.send(frames)
        if self._log is not None:
            self._log.write(frames, self._wall_clock())
        if self._failing:
            self._failing = False
            _LOGGER.info("CAN: bus working again")
        self._healthy = True
        self._sent_signature = self._signature()
        self.frame_sets += 1
        self.frames_sent += len(frames)
        self.last_sent = frames
        self.sent.set()


def _check_log_file(path: Path) -> None:
    """Fail at start-up, not on every retry, when the candump log cannot be appended to.

    Raises:
        ConfigError: naming the path and the operating system's reason.
    """
    try:
        with path.open("a", encoding="ascii"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot append to {path}: {reason}", key_path="outputs.can.log_file") from exc


async def _wait_until(event: Wakeup, deadline: float) -> bool:
    """Wait for `event` until `deadline` on the loop's clock; True when it was set."""
    if event.is_set():
        return True
    if deadline <= asyncio.get_running_loop().time():
        return False
    return await event.wait_until(deadline)

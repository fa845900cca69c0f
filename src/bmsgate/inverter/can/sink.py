"""`CanSink`: the inverter bridge over CAN — hub → bank → limits → profile frames → bus.

Two tasks share one state: the hub watcher recomputes on every update of a bank pack and asks for an
immediate frame set when things got less safe (a new alarm, a lower limit, a phase change); the bus
task owns the bus, sends the frame set every period (push profiles) or answers each request frame
(Growatt), and watches the inverter's keep-alive. A bus failure (python-can error, bus-off) closes
the bus and reopens it with backoff; the hub watcher carries on meanwhile, so the first frame set
after a reopen is current.

Scheduling uses the event loop's clock; data ages, staleness and limit dynamics use the injectable
`clock`, which must be the hub's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bmsgate.errors import ConfigError, SinkError
from bmsgate.inverter.can.bus import FrameBus, open_bus
from bmsgate.inverter.can.candump import CandumpWriter
from bmsgate.inverter.can.profiles import CanFrame, CanProfile, OutputPhase, Requests, build_frames, load_profile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.state import ForceChargeRequest, PhaseTracker
from bmsgate.inverter.status import BankTracker, InverterLiveness, InverterStatus, initial_status
from bmsgate.model import Alarm
from bmsgate.runtime.backoff import Backoff
from bmsgate.runtime.hub import SnapshotHub, Subscription

__all__ = ["SAFE_HOLD_PERIODS", "CanSink"]

_LOGGER = logging.getLogger(__name__)

_INITIAL_BACKOFF: Final = 0.5
_EPSILON: Final = 1e-6
_UNDER_VOLTAGE: Final = frozenset({Alarm.CELL_UNDERVOLTAGE, Alarm.PACK_UNDERVOLTAGE})

SAFE_HOLD_PERIODS: Final = 3
"""Frame periods the safe frame set is sent at least before the output may go silent."""

BusOpener = Callable[[CanSettings], FrameBus]


class CanSink:
    """Presents the battery bank to an inverter over CAN.

    Args:
        settings: the ``outputs.can`` configuration.
        profile: a compiled profile; loaded from ``settings.profile`` when omitted (the settings'
            quirk, manufacturer and period overrides are applied either way).
        bus_opener: opens the bus (tests inject fakes); defaults to :func:`~bmsgate.inverter.can.bus.open_bus`.
        clock: monotonic clock for data ages and limit dynamics (the hub's clock).
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
        *,
        profile: CanProfile | None = None,
        bus_opener: BusOpener | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        if settings.log_file is not None:
            _check_log_file(settings.log_file)
        self.profile = (profile or load_profile(settings.profile)).with_overrides(
            quirks=settings.quirk_overrides, manufacturer=settings.manufacturer, period=settings.period
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._open = bus_opener or open_bus
        self._tracker = BankTracker(
            settings.batteries,
            settings.limits,
            soc_extreme_band=settings.soc_extreme_band,
            label=self.name,
            clock=clock,
        )
        period = max(self.profile.period, self.profile.min_interval)
        self._phases = PhaseTracker(settings.silent_after, safe_hold=SAFE_HOLD_PERIODS * period)
        # Data past `silent_after` is stale for this output whatever the hub's budget says: the safe
        # phase starts at the latest there (and silence only after the safe frames were sent a while).
        self._max_age = settings.safe_after if settings.safe_after is not None else settings.silent_after
        self._liveness = (
            InverterLiveness(settings.keepalive_timeout, clock(), what=f"CAN frame {self.profile.liveness_id:#05x}")
            if self.profile.liveness_id is not None
            else None
        )
        self._force_charge = ForceChargeRequest(
            settings.force_charge_soc, settings.force_charge_ii_soc, settings.force_charge_hysteresis
        )
        self._status = initial_status(settings.batteries)
        self._requests = Requests()
        self._frames: list[CanFrame] = []
        self._sent_signature: tuple[OutputPhase, frozenset[Alarm], float, float] | None = None
        self._urgent = asyncio.Event()
        self._requested = asyncio.Event()
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
        """The bank, limits and inverter liveness currently published."""
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
        return list(self._frames)

    def add_listener(self, callback: Callable[[InverterStatus], None]) -> None:
        """Call `callback` with every new status (it must return quickly and not raise)."""
        self._listeners.append(callback)

    # -- computing ----------------------------------------------------------------------------------

    def refresh(self, hub: SnapshotHub) -> InverterStatus:
        """Recompute bank, limits, phase, requests and the frame set now.

        Returns:
            The new status.
        """
        bank, limits, now = self._tracker.update(hub, max_age=self._max_age)
        ages = [age for battery_id in self._tracker.battery_ids(hub) if (age := hub.age(battery_id)) is not None]
        phase = self._phases.update(bank, min(ages) if ages else None, now=now)
        present = self._liveness.check(now) if self._liveness is not None else None
        self._status = InverterStatus(
            bank=bank,
            limits=limits,
            heartbeat=self.frame_sets & 0xFFFF,
            inverter_present=present,
            updated_at=now,
        )
        self._tracker.log_state(self._status)
        normal = phase is OutputPhase.NORMAL
        self._requests = self._force_charge.update(
            bank.soc if normal else None, under_voltage=normal and not bank.alarms.isdisjoint(_UNDER_VOLTAGE)
        )
        self._frames = build_frames(self.profile, self._status, phase, self._requests)
        for listener in self._listeners:
            listener(self._status)
        return self._status

    def _signature(self) -> tuple[OutputPhase, frozenset[Alarm], float, float]:
        limits = self._status.limits
        return self.phase, self._status.bank.alarms, limits.charge_current, limits.discharge_current

    def _less_safe_than_sent(self) -> bool:
        """Whether the inverter must hear about the new state before the next period."""
        sent = self._sent_signature
        if sent is None:
            return bool(self._frames)
        phase, alarms, charge, discharge = self._signature()
        return (
            phase is not sent[0]
            or not alarms <= sent[1]
            or charge < sent[2] - _EPSILON
            or discharge < sent[3] - _EPSILON
        )

    # -- running ------------------------------------------------------------------------------------

    async def run(self, hub: SnapshotHub) -> None:
        """Compute from `hub` and transmit until cancelled."""
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
            with hub.subscribe(self.name) as subscription:
                self.refresh(hub)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._watch_hub(hub, subscription), name=f"{self.name}-hub")
                    group.create_task(self._bus_loop(hub), name=f"{self.name}-bus")
        finally:
            self._log = None
            if log is not None:
                log.close()

    async def _watch_hub(self, hub: SnapshotHub, subscription: Subscription) -> None:
        while True:
            updates = [await subscription.get()]
            while (update := subscription.get_nowait()) is not None:
                updates.append(update)
            bank_ids = set(self._tracker.battery_ids(hub))
            if not any(update.battery_id in bank_ids for update in updates):
                continue
            self.refresh(hub)
            if self.profile.mode == "push" and self._less_safe_than_sent():
                self._urgent.set()

    async def _bus_loop(self, hub: SnapshotHub) -> None:
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
                        group.create_task(self._transmit(hub, bus), name=f"{self.name}-transmit")
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
        liveness_id = self.profile.liveness_id
        request_id = self.profile.request_id if self.profile.mode == "request" else None
        while True:
            frame = await bus.receive()
            if frame.arbitration_id == liveness_id and self._liveness is not None:
                self._liveness.seen(self._clock())
            if frame.arbitration_id == request_id:
                self._requested.set()

    async def _transmit(self, hub: SnapshotHub, bus: FrameBus) -> None:
        if self.profile.mode == "request":
            await self._answer_requests(hub, bus)
        else:
            await self._push(hub, bus)

    async def _push(self, hub: SnapshotHub, bus: FrameBus) -> None:
        loop = asyncio.get_running_loop()
        min_interval = self.profile.min_interval
        period = max(self.profile.period, min_interval)
        next_due = loop.time()
        last_sent = -min_interval
        while True:
            urgent = await _wait(self._urgent, next_due - loop.time())
            self._urgent.clear()
            # The regular grid already keeps `period` >= `min_interval`; only an urgent set may come early.
            wait_more = last_sent + min_interval - loop.time()
            if urgent and wait_more > 0:
                await asyncio.sleep(wait_more)
            last_sent = loop.time()
            self.refresh(hub)
            await self._send(bus)
            # A fixed grid keeps the period free of drift; an urgent set restarts the grid after itself.
            next_due = last_sent + period if urgent else next_due + period
            if next_due < loop.time():
                next_due = loop.time() + period

    async def _answer_requests(self, hub: SnapshotHub, bus: FrameBus) -> None:
        while True:
            requested = await _wait(self._requested, self.profile.period)
            self._requested.clear()
            self.refresh(hub)
            # A dry run has no inverter to ask: answer on the period so the log shows the frames.
            if requested or self.settings.dry_run:
                await self._send(bus)

    async def _send(self, bus: FrameBus) -> None:
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


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to `timeout` s for `event`; True when it was set."""
    if event.is_set():
        return True
    if timeout <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
            return True
    return False

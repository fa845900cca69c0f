"""The supervisor: every poller and output in one TaskGroup, with backoff and a clean shutdown.

A failing battery backs off and retries without disturbing the others; a failing output is restarted
on its own; a slow output never blocks a poller (outputs read the hub, which never waits for them).
A battery becoming unavailable is logged once at WARNING, its recovery once at INFO.

While running, :meth:`Supervisor.apply` changes what runs without disturbing the rest (see
``docs/live-reconfiguration.md``): a battery's protocol definition is swapped between two of its polls,
batteries are added and removed as tasks of the same TaskGroup, and an output swaps the item it encodes.
Each change returns its inverse, so the previous state can be put back the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from typing import Final, Protocol, TypeAlias, runtime_checkable

from bmsgate.errors import AuthenticationError, ConfigError, DeviceError
from bmsgate.model import BatterySnapshot
from bmsgate.protocols.compiled import CompiledProtocol
from bmsgate.runtime.backoff import Backoff, exponential_delay
from bmsgate.runtime.cadence import tick_after
from bmsgate.runtime.cancellation import stop
from bmsgate.runtime.client import BatteryClient, LinkStatistics
from bmsgate.runtime.hub import SnapshotHub
from bmsgate.runtime.slots import ConnectionSlots
from bmsgate.runtime.wakeup import Wakeup

__all__ = [
    "AddBattery",
    "BatteryRuntime",
    "Change",
    "LiveSwappable",
    "RemoveBattery",
    "ReplaceOutputItem",
    "ReplaceProtocol",
    "Sink",
    "Supervisor",
]

_LOGGER = logging.getLogger(__name__)
_MAX_BACKOFF: Final = 300.0
_HUNG_KEEP_ALIVE_GRACE: Final = 0.1
"""Seconds past the next poll's time after which a keep-alive write that hangs between polls is abandoned: a
poll comes at most this much later than an interval after the previous one began. Not zero: a bound at the
very instant the wait ends by itself would, in some passes, fire first and cancel the task after all."""
_SINK_BACKOFF_START: Final = 1.0
_SINK_BACKOFF_MAX: Final = 60.0
_CLOSE_TIMEOUT: Final = 1.0
_REMOVE_GRACE: Final = 1.5
"""Seconds a removed poller gets to end after its cancellation (it closes its transport, bounded by
`_CLOSE_TIMEOUT`) before it is cancelled again."""
_REMOVE_LIMIT: Final = 2.0


@runtime_checkable
class Sink(Protocol):
    """An output: runs until cancelled, owns its reconnects."""

    name: str

    async def run(self, hub: SnapshotHub) -> None:
        """Consume the hub (forever)."""


@dataclasses.dataclass(slots=True)
class BatteryRuntime:
    """One battery as the supervisor runs it."""

    battery_id: str
    name: str
    client: BatteryClient
    poll_interval: float
    stale_after: float
    slots: ConnectionSlots | None = None
    """Shared connection slots (time-slicing) when the transport's adapter is oversubscribed."""
    available: bool | None = None
    consecutive_failures: int = 0


@runtime_checkable
class LiveSwappable(Protocol):
    """An output that can replace the item it encodes (register map, CAN profile) while running."""

    def swap_item(self, item: object) -> object:
        """Validate `item`, use it from the next encode on, and return the item it replaces.

        Raises:
            ConfigError: `item` is of the wrong kind for this output.
        """
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class ReplaceProtocol:
    """Poll `battery_id` with `protocol` from its next poll on (same transport and options)."""

    battery_id: str
    protocol: CompiledProtocol


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class AddBattery:
    """Start polling `runtime` (its id must be new)."""

    runtime: BatteryRuntime


@dataclasses.dataclass(frozen=True, slots=True)
class RemoveBattery:
    """Stop polling `battery_id`, close its transport and tell the outputs it is gone."""

    battery_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReplaceOutputItem:
    """Have the output named `output` encode with `item` (see :class:`LiveSwappable`)."""

    output: str
    item: object


Change: TypeAlias = ReplaceProtocol | AddBattery | RemoveBattery | ReplaceOutputItem
"""What :meth:`Supervisor.apply` accepts and returns (as the inverse)."""


@dataclasses.dataclass(slots=True)
class _Poller:
    """The supervisor's handle on one battery's poll loop."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """Held for a whole poll or MOSFET command: whoever holds it between them stands at a poll boundary."""
    wake: Wakeup = dataclasses.field(default_factory=Wakeup)
    """Cuts the pause between polls short (after a protocol swap the new definition is read at once)."""
    started: asyncio.Future[None] | None = None
    """Resolved by the poll loop's first step (a task cancelled before that never runs its body)."""
    task: asyncio.Task[None] | None = None
    keep_alive_failed: bool = False
    """An unexpected error between polls was logged (once per poller: it would repeat every interval)."""


class _Shutdown(Exception):
    """Raised inside the TaskGroup to end it."""


class Supervisor:
    """Runs pollers and sinks; also the control path outputs use to switch MOSFETs."""

    def __init__(
        self,
        batteries: list[BatteryRuntime],
        sinks: list[Sink],
        *,
        hub: SnapshotHub | None = None,
        max_backoff: float = _MAX_BACKOFF,
        sink_backoff: float = _SINK_BACKOFF_START,
        jitter: float = 0.1,
    ) -> None:
        self.hub = hub or SnapshotHub()
        self.batteries = {battery.battery_id: battery for battery in batteries}
        self.sinks = sinks
        self._max_backoff = max_backoff
        self._sink_backoff = sink_backoff
        self._jitter = jitter
        self._stop = asyncio.Event()
        self._random = random.Random()
        self._pollers = {battery.battery_id: _Poller() for battery in batteries}
        self._group: asyncio.TaskGroup | None = None
        self._apply_lock = asyncio.Lock()
        for battery in batteries:
            self.hub.register(battery.battery_id, stale_after=battery.stale_after)

    # -- lifecycle --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask `run` to finish (signal-handler safe on the loop thread)."""
        self._stop.set()

    async def run(self, *, duration: float | None = None) -> None:
        """Run until `request_stop` (or for `duration` seconds)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.hub.run(), name="hub-staleness")
                for battery in self.batteries.values():
                    self._start_poller(group, battery)
                for sink in self.sinks:
                    group.create_task(self._run_sink(sink), name=f"sink-{sink.name}")
                self._group = group
                try:
                    async with asyncio.timeout(duration):
                        await self._stop.wait()
                except TimeoutError:
                    _LOGGER.info("run time of %.0f s reached", duration or 0.0)
                _LOGGER.info("shutting down")
                self._group = None
                raise _Shutdown  # noqa: TRY301 - ends the TaskGroup, caught right below
        except* _Shutdown:
            pass
        finally:
            self._group = None

    # -- live changes -------------------------------------------------------------------------------

    async def apply(self, change: Change) -> Change:
        """Apply `change` while running; returns the change that puts back what it replaced.

        One change at a time; this returns once the change has taken effect: a new protocol is in use
        (swapped at the battery's poll boundary, never during a poll or a MOSFET command), an added
        battery's task is running, a removed battery's task has ended and its transport is closed.
        Nothing else pauses: the other pollers and the outputs keep running throughout.

        Raises:
            ConfigError: unknown battery id or output, duplicate battery id, an output that cannot swap
                its item, or an item of the wrong kind (nothing was changed).
            RuntimeError: the supervisor is not running.
        """
        async with self._apply_lock:
            self._require_running()
            match change:
                case ReplaceProtocol():
                    inverse: Change = await self._replace_protocol(change)
                case AddBattery():
                    inverse = await self._add_battery(change)
                case RemoveBattery():
                    inverse = await self._remove_battery(change)
                case ReplaceOutputItem():
                    inverse = self._replace_output_item(change)
                case _:
                    raise TypeError(f"not a supervisor change: {change!r}")
            return inverse

    @property
    def running(self) -> bool:
        """Whether live changes are accepted now (between start-up and the start of shutdown)."""
        return self._group is not None and not self._stop.is_set()

    def _require_running(self) -> asyncio.TaskGroup:
        if not self.running or self._group is None:
            raise RuntimeError("the supervisor is not running: live changes need a running supervisor")
        return self._group

    def _require_battery(self, battery_id: str) -> BatteryRuntime:
        battery = self.batteries.get(battery_id)
        if battery is None:
            raise ConfigError(f"no battery {battery_id!r} is running", key_path=f"batteries.{battery_id}")
        return battery

    async def _replace_protocol(self, change: ReplaceProtocol) -> ReplaceProtocol:
        battery = self._require_battery(change.battery_id)
        poller = self._pollers[battery.battery_id]
        async with poller.lock:
            old = battery.client
            # A fresh client, not a mutated one: no frame, streaming or connect-time state of the old
            # definition can leak into the new one. The link statistics are the battery's, not the client's.
            client = BatteryClient(change.protocol, old.transport, battery_id=old.battery_id, options=old.options)
            client.stats = old.stats
            # Reconnecting restarts the BMS side of the session too (streams, connect-time requests).
            await self._close_quietly(battery)
            battery.client = client
        poller.wake.set()
        if poller.task is None or poller.task.done():
            # The poller gave up (wrong PIN): a new definition is a configuration change, so retry.
            battery.available, battery.consecutive_failures = None, 0
            await self._start_and_wait(self._require_running(), battery)
        _LOGGER.info(
            "%s: protocol %s replaced by %s (live)", battery.battery_id, old.protocol.name, change.protocol.name
        )
        return ReplaceProtocol(battery.battery_id, old.protocol)

    async def _add_battery(self, change: AddBattery) -> RemoveBattery:
        group = self._require_running()
        battery = change.runtime
        if battery.battery_id in self.batteries:
            raise ConfigError(
                f"battery {battery.battery_id!r} is running already", key_path=f"batteries.{battery.battery_id}"
            )
        if battery.stale_after <= 0:
            raise ConfigError("stale_after must be positive", key_path=f"batteries.{battery.battery_id}.stale_after")
        battery.available, battery.consecutive_failures = None, 0
        self.hub.register(battery.battery_id, stale_after=battery.stale_after)
        self.batteries[battery.battery_id] = battery
        self._pollers[battery.battery_id] = _Poller()
        await self._start_and_wait(group, battery)
        _LOGGER.info("%s: battery added (live, protocol %s)", battery.battery_id, battery.client.protocol.name)
        return RemoveBattery(battery.battery_id)

    async def _remove_battery(self, change: RemoveBattery) -> AddBattery:
        battery = self._require_battery(change.battery_id)
        # Unknown from here on: control commands and link statistics no longer find it.
        del self.batteries[battery.battery_id]
        poller = self._pollers.pop(battery.battery_id)
        try:
            if poller.task is not None:
                await stop(poller.task, grace=_REMOVE_GRACE, limit=_REMOVE_LIMIT)
        finally:
            # The poller closed it on its way out, unless it was abandoned or had never run.
            await self._close_quietly(battery)
            self.hub.unregister(battery.battery_id)
        _LOGGER.info("%s: battery removed (live)", battery.battery_id)
        return AddBattery(battery)

    def _replace_output_item(self, change: ReplaceOutputItem) -> ReplaceOutputItem:
        matches = [sink for sink in self.sinks if sink.name == change.output]
        key_path = f"outputs.{change.output}"
        if not matches:
            raise ConfigError(f"no output {change.output!r} is running", key_path=key_path)
        if len(matches) > 1:
            raise ConfigError(f"{len(matches)} outputs are named {change.output!r}: ambiguous", key_path=key_path)
        sink = matches[0]
        if not isinstance(sink, LiveSwappable):
            raise ConfigError(f"output {change.output!r} cannot swap its item while running", key_path=key_path)
        previous = sink.swap_item(change.item)
        _LOGGER.info("output %s: item replaced (live)", change.output)
        return ReplaceOutputItem(change.output, previous)

    def _start_poller(
        self, group: asyncio.TaskGroup, battery: BatteryRuntime
    ) -> tuple[asyncio.Future[None], asyncio.Task[None]]:
        poller = self._pollers[battery.battery_id]
        started = poller.started = asyncio.get_running_loop().create_future()
        task = poller.task = group.create_task(self._poll_forever(battery, poller), name=f"poll-{battery.battery_id}")
        return started, task

    async def _start_and_wait(self, group: asyncio.TaskGroup, battery: BatteryRuntime) -> None:
        started, task = self._start_poller(group, battery)
        await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)

    # -- pollers ----------------------------------------------------------------------------------

    def link_stats(self, battery_id: str) -> LinkStatistics | None:
        """Link statistics of one battery (for outputs)."""
        battery = self.batteries.get(battery_id)
        return battery.client.stats if battery else None

    async def poll_once(self, battery: BatteryRuntime) -> BatterySnapshot:
        """One poll, through the shared slots when there are any."""
        if battery.slots is None:
            return await battery.client.read()
        async with battery.slots.slot():
            return await battery.client.read()

    async def _poll_forever(self, battery: BatteryRuntime, poller: _Poller) -> None:
        loop = asyncio.get_running_loop()
        if poller.started is not None and not poller.started.done():
            poller.started.set_result(None)
        try:
            while True:
                poller.wake.clear()
                started = loop.time()
                # Published under the lock too: a snapshot published after a protocol swap returned is
                # always decoded by the new definition.
                async with poller.lock:
                    self.hub.rounds.began(battery.battery_id)
                    try:
                        snapshot = await self.poll_once(battery)
                    except AuthenticationError as exc:
                        _LOGGER.error(  # noqa: TRY400 - an expected condition: no traceback
                            "%s: %s; not retrying until the configuration changes", battery.battery_id, exc
                        )
                        battery.available = False
                        return
                    except DeviceError as exc:
                        next_poll = started + self._failed(battery, exc)
                    except Exception:
                        # A bug must not take the gateway down: log it once per streak and back off.
                        if battery.consecutive_failures == 0:
                            _LOGGER.exception("%s: unexpected error while polling", battery.battery_id)
                        next_poll = started + self._failed(battery, None)
                    else:
                        self._succeeded(battery)
                        self.hub.publish(snapshot)
                        # The first tick of the shared grid (runtime/cadence.py) after this poll began, so
                        # batteries with the same interval poll in one wake-up with the outputs' ticks. Never
                        # later than a whole interval after the start, as before: a `stale_after` just above
                        # the interval must still hold. A poll that began off the grid (the first, one after a
                        # backoff or a change) and ran past that tick is followed at once, once, as one that
                        # took longer than the interval always was. A failing battery's backoff stays
                        # jittered, so retries against a struggling adapter spread out.
                        next_poll = tick_after(started, battery.poll_interval)
                    finally:
                        # After the snapshot is in the hub: an output waiting for the round then finds it.
                        self.hub.rounds.ended(battery.battery_id)
                # Not a bare wait: a protocol's keep-alive goes on while the link is kept. The wait returns at
                # `next_poll` by itself (runtime/wakeup.py: no cancellation); the timeout only bounds a hung
                # keep-alive write.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(max(loop.time(), next_poll) + _HUNG_KEEP_ALIVE_GRACE):
                        await self._between_polls(battery, poller, next_poll)
        finally:
            await self._close_quietly(battery)

    async def _between_polls(self, battery: BatteryRuntime, poller: _Poller, next_poll: float) -> None:
        """The wait between two polls with the keep-alive; guarded like a poll, since it runs in the same task.

        Whatever escapes it would end the TaskGroup and with it every poller and output. The client handles
        device errors itself (it closes the link; the next poll reports the problem); anything else is a bug:
        logged once per poller, then the wait goes on without the keep-alive.
        """
        try:
            await battery.client.between_polls(poller.wake, until=next_poll)
        except Exception:
            if not poller.keep_alive_failed:
                poller.keep_alive_failed = True
                _LOGGER.exception("%s: unexpected error between polls (keep-alive)", battery.battery_id)
            await poller.wake.wait_until(next_poll)

    def _failed(self, battery: BatteryRuntime, error: DeviceError | None) -> float:
        battery.consecutive_failures += 1
        if battery.available is not False:
            _LOGGER.warning("%s: unavailable: %s", battery.battery_id, error or "internal error")
            battery.available = False
        else:
            _LOGGER.debug("%s: still unavailable: %s", battery.battery_id, error)
        return exponential_delay(
            battery.consecutive_failures - 1,
            initial=battery.poll_interval,
            maximum=max(self._max_backoff, battery.poll_interval),
            jitter=self._jitter,
            rng=self._random,
        )

    def _succeeded(self, battery: BatteryRuntime) -> None:
        if battery.available is False:
            _LOGGER.info(
                "%s: available again after %d failed poll%s",
                battery.battery_id,
                battery.consecutive_failures,
                "" if battery.consecutive_failures == 1 else "s",
            )
        battery.available = True
        battery.consecutive_failures = 0

    async def _close_quietly(self, battery: BatteryRuntime) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await battery.client.close()
        except (TimeoutError, DeviceError) as exc:
            _LOGGER.debug("%s: close failed: %s", battery.battery_id, exc)

    # -- sinks ------------------------------------------------------------------------------------

    async def _run_sink(self, sink: Sink) -> None:
        backoff = Backoff(self._sink_backoff, _SINK_BACKOFF_MAX, jitter=self._jitter, rng=self._random)
        while True:
            try:
                await sink.run(self.hub)
            except Exception as exc:  # one output's failure must never stop the others
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # Stopping: an error raised while the output cleaned up took the cancellation's place.
                    # Restarting the output now would outlive the shutdown (and keep the process running).
                    _LOGGER.debug("output %s failed while stopping: %s", sink.name, exc)
                    raise asyncio.CancelledError from exc
                if not backoff.failures:
                    _LOGGER.warning("output %s failed: %s; retrying", sink.name, exc)
                else:
                    _LOGGER.debug("output %s failed again: %s", sink.name, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            return

    # -- control (used by outputs such as Home Assistant switches) ---------------------------------

    async def set_mosfets(
        self, battery_id: str, *, charge: bool | None = None, discharge: bool | None = None
    ) -> BatterySnapshot:
        """Switch MOSFETs on one battery, confirm by reading back, publish the confirmed state.

        Raises:
            CommandRefused: the BMS refused or did not confirm.
            DeviceError: unknown battery or a link failure.
        """
        battery = self.batteries.get(battery_id)
        if battery is None:
            raise DeviceError("no such battery", battery_id=battery_id)
        async with self._pollers[battery_id].lock:
            if battery.slots is None:
                snapshot = await battery.client.set_mosfets(charge=charge, discharge=discharge)
            else:
                async with battery.slots.slot():
                    snapshot = await battery.client.set_mosfets(charge=charge, discharge=discharge)
            # Removed meanwhile: the outputs were told it is gone, do not bring it back.
            if self.batteries.get(battery_id) is battery:
                self.hub.publish(snapshot)
        return snapshot

"""FleetAgent: the gateway's uplink to its fleet server, an output right of the hub like any other.

Four long-lived tasks share the agent's view:

* the *consumer* reads the hub subscription and turns changes into events (battery online/offline,
  alarm raised/cleared), never waiting for the broker;
* the *sampler* builds one telemetry message per interval from the hub (every battery, compact form)
  and the inverter controller's status;
* the *location* task follows the configured source (events when the fix is lost or regained);
* the *connection loop* connects with a retained last will (``offline``), says ``online``, publishes the
  retained state, subscribes to its ``command`` and ``desired`` topics and sends the outbox.

Telemetry and events go through the on-disk :class:`~bmsgate.fleet.agent.buffer.Outbox` first and leave
it only when the broker acknowledged them (QoS 1 PUBACK), so an outage of any length up to the buffer's
bound leaves no gap. After a reconnect, messages made during this connection go first; the backlog
follows oldest first, at ``backfill_rate`` messages per second, each marked ``"backfill": true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bmsgate import __version__
from bmsgate.errors import BmsgateError, SinkError
from bmsgate.fleet.agent.buffer import BufferedMessage, Outbox
from bmsgate.fleet.agent.commands import CommandRejected, CommandScreen
from bmsgate.fleet.agent.desired import DesiredStateHandler, ReportedOutbox, UpdateReporter
from bmsgate.fleet.agent.events import EventTracker, PendingEvent
from bmsgate.fleet.agent.identity import hardware_model, state_packs
from bmsgate.fleet.agent.location import LocationSource
from bmsgate.fleet.agent.messages import MAX_BATTERIES, reported_payload, telemetry_builder
from bmsgate.fleet.protocol import (
    MAX_PAYLOAD_BYTES,
    OFFLINE,
    ONLINE,
    PROTOCOL_VERSION,
    BatteryDescriptor,
    BufferStatus,
    Channel,
    CommandKind,
    CommandMessage,
    EventKind,
    EventMessage,
    Location,
    LocationFix,
    PackVersion,
    StateMessage,
    encode,
    topic,
)
from bmsgate.fleet.updates import ReportedState, UpdatePhase
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.runtime.backoff import Backoff
from bmsgate.runtime.cancellation import run_isolated
from bmsgate.runtime.hub import SnapshotHub, Subscription

if TYPE_CHECKING:
    from bmsgate.mqtt.client import MqttSession

__all__ = [
    "AgentOptions",
    "AgentStats",
    "DesiredStateHandler",
    "FleetAgent",
    "InverterStatusProvider",
    "UpdateReporter",
]

_LOGGER = logging.getLogger(__name__)

InverterStatusProvider = Callable[[], Mapping[str, object] | None]
RediscoverHook = Callable[[], Sequence[str]]
"""Asks the outputs to re-run their discovery; returns the names of those that will."""

_MOVED_M: Final = 25.0
"""A position change beyond this republishes the state (GPS jitter stays below it)."""
_MIN_STATE_GAP: Final = 1.0
_LOCATION_RETRY_MAX: Final = 300.0
_DROP_EVENT_GAP: Final = 60.0
"""At most one ``buffer_dropped`` event per minute (each one could push out the next old message)."""
_GOODBYE_TIMEOUT: Final = 1.0
_STOP_GRACE: Final = 1.5
_STOP_LIMIT: Final = 2.0
_SESSION_STOP_GRACE: Final = 0.25
_SESSION_STOP_LIMIT: Final = 0.5
_BACKFILL_MARK: Final = b'{"backfill":true,'


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """Everything the agent needs besides the hub (a config file is one way to make it)."""

    gateway_id: str
    broker: BrokerSettings
    buffer_path: Path
    buffer_max_bytes: int = 64 * 1024 * 1024
    backfill_rate: float = 20.0
    interval: float = 10.0
    state_interval: float = 900.0
    name: str | None = None
    site: str | None = None
    tags: tuple[str, ...] = ()
    batteries: tuple[BatteryDescriptor, ...] = ()
    hardware: str | None = None
    """Default: :func:`~bmsgate.fleet.agent.identity.hardware_model`."""
    software_version: str = __version__
    packs: tuple[PackVersion, ...] | None = None
    """Default: the catalog's items (:func:`~bmsgate.fleet.agent.identity.pack_versions`)."""


@dataclasses.dataclass(slots=True)
class AgentStats:
    """Counters for tests, benchmarks and diagnostics."""

    connects: int = 0
    sent: int = 0
    """Telemetry and event messages acknowledged by the broker."""
    backfilled: int = 0
    """Of those, sent from the backlog."""
    bytes: int = 0
    states: int = 0
    commands_done: int = 0
    commands_rejected: int = 0


def _distance_m(a: Location, b: Location) -> float:
    if a.lat is None or a.lon is None or b.lat is None or b.lon is None:
        return math.inf
    dlat = math.radians(b.lat - a.lat)
    dlon = math.radians(b.lon - a.lon) * math.cos(math.radians((a.lat + b.lat) / 2))
    return 6_371_000 * math.hypot(dlat, dlon)


class FleetAgent:
    """Reports one gateway to the fleet (see docs/fleet/agent.md).

    Args:
        options: identity, broker, buffer and intervals.
        location: where the site's position comes from (None: none reported).
        inverter_status: the inverter controller's status (``InverterStatus.to_dict()``), if any.
        desired: applies the server's desired state (the signed rollouts); None: the gateway reports that
            it cannot apply desired state yet.
        rediscover: asks the other outputs to re-run their discovery (the ``rediscover_outputs`` command).
        clock: wall clock (seconds since 1970) for message times.
    """

    name = "fleet"

    def __init__(
        self,
        options: AgentOptions,
        *,
        location: LocationSource | None = None,
        inverter_status: InverterStatusProvider | None = None,
        desired: DesiredStateHandler | None = None,
        rediscover: RediscoverHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.gateway_id = options.gateway_id
        self._location_source = location
        self._inverter_status = inverter_status
        self._desired_handler = desired
        self._rediscover = rediscover
        self._clock = clock
        self._started = time.monotonic()
        self._hardware = options.hardware if options.hardware is not None else hardware_model()
        self._packs = list(options.packs) if options.packs is not None else state_packs(self._desired_handler)
        self._descriptors = {battery.id: battery for battery in options.batteries}
        self._topics = {channel: topic(self.gateway_id, channel) for channel in Channel}
        self._seen_batteries: set[str] = set()
        self._tracker = EventTracker()
        self._screen = CommandScreen()
        self._outbox: Outbox | None = None
        self._hub: SnapshotHub | None = None
        self._location: Location | None = None
        self._published_location: Location | None = None
        self._wake = asyncio.Event()
        self._state_dirty = asyncio.Event()
        self._desired_event = asyncio.Event()
        self._desired_payload: bytes | None = None
        self._reported = ReportedOutbox(self._wake.set)
        self._last_drop_event = -math.inf
        self._unreported_drops = 0
        self.stats = AgentStats()
        self.connected = asyncio.Event()
        """Set while a session is up and the first state is published (for tests and status)."""

    # -- public ----------------------------------------------------------------------------------

    @property
    def outbox(self) -> Outbox | None:
        """The open buffer while running."""
        return self._outbox

    @property
    def location(self) -> Location | None:
        """The latest location (None before the source reported, or without a source)."""
        return self._location

    def report_config_applied(
        self, detail: str, data: Mapping[str, str | int | float | bool | None] | None = None
    ) -> None:
        """Record a ``config_applied`` event (live reconfiguration, a rollout step)."""
        self._append_event(PendingEvent(EventKind.CONFIG_APPLIED, detail=detail[:1024], data=dict(data or {})))

    async def run(self, hub: SnapshotHub) -> None:
        """Report until cancelled; reconnects on its own and never slows the hub's producers.

        Raises:
            SinkError: the buffer cannot be opened (the supervisor retries the output).
        """
        self._hub = hub
        self._outbox = Outbox(self.options.buffer_path, max_bytes=self.options.buffer_max_bytes)
        subscription = hub.subscribe(self.name)
        try:
            self.report_config_applied(
                "agent started",
                {"batteries": len(hub.battery_ids()), "packs": len(self._packs), "packs_sha256": self._packs_digest()},
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume(subscription), name="fleet-consume")
                group.create_task(self._sample(hub), name="fleet-sample")
                group.create_task(self._follow_location(), name="fleet-location")
                group.create_task(self._desired_worker(), name="fleet-desired")
                group.create_task(self._mqtt(), name="fleet-mqtt")
        finally:
            subscription.close()
            self._outbox.close()
            self._outbox = None

    # -- producing -------------------------------------------------------------------------------

    def _packs_digest(self) -> str:
        joined = "\n".join(f"{pack.kind}/{pack.name}/{pack.sha256}" for pack in self._packs)
        return hashlib.sha256(joined.encode()).hexdigest()

    def _append(self, channel: Channel, build: Callable[[int], bytes], created: float) -> int | None:
        if self._outbox is None:
            return None
        try:
            seq, dropped = self._outbox.append(channel.value, build, created=created)
        except SinkError as exc:
            _LOGGER.warning("fleet: %s; this %s message is lost", exc, channel.value)
            return None
        self._wake.set()
        if dropped:
            self._unreported_drops += dropped
            self._state_dirty.set()
            # Offline, an event would itself be the oldest message soon and be dropped: the drops are
            # reported once the broker can hear it (see _report_drops, called on connect).
            if self.connected.is_set() and time.monotonic() - self._last_drop_event >= _DROP_EVENT_GAP:
                self._report_drops()
        return seq

    def _report_drops(self) -> None:
        """One ``buffer_dropped`` event for the drops not yet reported (none: nothing)."""
        if not self._unreported_drops or self._outbox is None:
            return
        self._last_drop_event = time.monotonic()
        count, self._unreported_drops = self._unreported_drops, 0
        self._append_event(
            PendingEvent(
                EventKind.BUFFER_DROPPED,
                detail="offline buffer full: oldest messages dropped",
                data={"dropped": count, "total": self._outbox.dropped},
            )
        )

    def _append_event(self, event: PendingEvent) -> None:
        at = self._clock()

        def build(seq: int) -> bytes:
            return encode(
                EventMessage(
                    v=PROTOCOL_VERSION,
                    gateway=self.gateway_id,
                    seq=seq,
                    at=at,
                    kind=event.kind,
                    battery=event.battery,
                    alarm=event.alarm,
                    # The server refuses a NUL anywhere in a payload; a detail may quote what a command said.
                    detail=event.detail.replace("\x00", "\ufffd")[:1024],
                    data=event.data,
                )
            )

        self._append(Channel.EVENT, build, at)

    async def _consume(self, subscription: Subscription) -> None:
        async for update in subscription:
            if update.removed:
                events = self._tracker.removed(update.battery_id)
                self._state_dirty.set()
            else:
                if update.battery_id not in self._seen_batteries:
                    self._seen_batteries.add(update.battery_id)
                    self._state_dirty.set()
                events = self._tracker.battery(update.battery_id, update.snapshot, stale=update.stale)
            for event in events:
                self._append_event(event)

    def telemetry(self, hub: SnapshotHub) -> Callable[[int], bytes]:
        """The telemetry message of this moment, as a payload builder for a sequence number."""
        inverter = self._inverter_status() if self._inverter_status is not None else None
        return telemetry_builder(self.gateway_id, hub, at=self._clock(), inverter=inverter)

    async def _sample(self, hub: SnapshotHub) -> None:
        loop = asyncio.get_running_loop()
        interval = self.options.interval
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            build = self.telemetry(hub)
            self._append(Channel.TELEMETRY, build, self._clock())
            next_at += interval
            if next_at < loop.time():  # the loop was blocked for more than an interval: do not burst
                next_at = loop.time() + interval

    async def _follow_location(self) -> None:
        source = self._location_source
        if source is None:
            return
        backoff = Backoff(5.0, _LOCATION_RETRY_MAX, jitter=0.25)
        while True:
            try:
                await source.run(self._take_location)
            except Exception as exc:  # noqa: BLE001 - a broken location source must never stop the telemetry
                delay = backoff.next_delay()
                _LOGGER.warning("fleet: location source failed: %r; retrying in %.0f s", exc, delay)
                self._take_location(Location(source=source.kind, fix=LocationFix.NONE))
                await asyncio.sleep(delay)
            else:
                return

    def _take_location(self, location: Location) -> None:
        self._location = location
        for event in self._tracker.location(location):
            self._append_event(event)
        published = self._published_location
        if (
            published is None
            or published.fix is not location.fix
            or (location.fix is not LocationFix.NONE and _distance_m(published, location) > _MOVED_M)
        ):
            self._state_dirty.set()

    def state(self) -> StateMessage:
        """The retained state as of now."""
        outbox = self._outbox
        buffer = BufferStatus(queued=outbox.queued, dropped=outbox.dropped) if outbox is not None else BufferStatus()
        ids = self._hub.battery_ids() if self._hub is not None else list(self._descriptors)
        batteries = [self._descriptors.get(battery_id) or BatteryDescriptor(id=battery_id) for battery_id in ids]
        return StateMessage(
            v=PROTOCOL_VERSION,
            gateway=self.gateway_id,
            sent_at=self._clock(),
            software_version=self.options.software_version,
            hardware=self._hardware[:1024],
            uptime_s=time.monotonic() - self._started,
            name=self.options.name,
            site=self.options.site,
            tags=list(self.options.tags),
            interval_s=self.options.interval,
            packs=self._packs,
            location=self._location,
            batteries=batteries[:MAX_BATTERIES],
            buffer=buffer,
        )

    # -- desired state ---------------------------------------------------------------------------

    @property
    def desired_handler(self) -> DesiredStateHandler | None:
        """The handler of the server's desired state (the update engine), if any."""
        return self._desired_handler

    def report_update(self, state: ReportedState) -> None:
        """Publish one phase of an update (retained); the state's packs follow what now runs."""
        self._reported.put(state.model_dump_json(exclude_defaults=True).encode())
        if state.phase in (UpdatePhase.ACTIVE_PENDING, UpdatePhase.COMMITTED, UpdatePhase.REVERTED):
            # The catalog changed (or changed back): the retained state names the data files that run now.
            if self.options.packs is None:
                self._packs = state_packs(self._desired_handler)
            self._state_dirty.set()

    async def _desired_worker(self) -> None:
        handler = self._desired_handler
        if handler is not None:
            try:
                await handler.resume(self.report_update)
            except Exception:
                _LOGGER.exception("fleet: resuming the update after a restart failed")
        while True:
            await self._desired_event.wait()
            self._desired_event.clear()
            payload = self._desired_payload
            if payload is None:
                continue
            digest = hashlib.sha256(payload).hexdigest()
            if handler is None:
                self._reported.put(
                    self._reported_json("unsupported", digest, "this gateway cannot apply desired state yet")
                )
                continue
            try:
                await handler.take(payload, self.report_update)
            except Exception as exc:
                if not isinstance(exc, BmsgateError):
                    _LOGGER.exception("fleet: the desired-state handler failed")
                self._reported.put(self._reported_json("error", digest, str(exc)[:1024] or type(exc).__name__))

    def _reported_json(self, status: str, digest: str, detail: str) -> bytes:
        return reported_payload(self.gateway_id, status=status, desired_sha256=digest, detail=detail, at=self._clock())

    # -- broker side -------------------------------------------------------------------------------

    async def _mqtt(self) -> None:
        """The connection loop in a task that a cancellation always ends (see the Home Assistant sink)."""
        await run_isolated(self._connection_loop(), name="fleet-connection", grace=_STOP_GRACE, limit=_STOP_LIMIT)

    async def _connection_loop(self) -> None:
        from bmsgate.mqtt import client as mqtt  # noqa: PLC0415 - aiomqtt is an optional extra

        settings = self.options.broker
        backoff = Backoff(settings.reconnect_initial, settings.reconnect_max, jitter=0.25)
        failing = False
        availability = self._topics[Channel.AVAILABILITY]
        while True:
            try:
                async with mqtt.connect(
                    settings, will_topic=availability, will_payload=OFFLINE.decode(), client_id=self.gateway_id
                ) as session:
                    self.stats.connects += 1
                    backoff.reset()
                    _LOGGER.info(
                        "fleet: connected to %s as %s%s",
                        settings.display_url(),
                        self.gateway_id,
                        f" ({self._outbox.queued} buffered)" if self._outbox and self._outbox.queued else "",
                    )
                    failing = False
                    try:
                        await run_isolated(
                            self._serve(session),
                            name="fleet-session",
                            grace=_SESSION_STOP_GRACE,
                            limit=_SESSION_STOP_LIMIT,
                        )
                    except asyncio.CancelledError:
                        with contextlib.suppress(SinkError, TimeoutError):
                            async with asyncio.timeout(_GOODBYE_TIMEOUT):
                                await session.publish(availability, OFFLINE, retain=True)
                        raise
            except SinkError as exc:
                self.connected.clear()
                delay = backoff.next_delay()
                if not failing:
                    _LOGGER.warning("fleet: %s; buffering, retrying in %.1f s", exc, delay)
                failing = True
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()

    async def _serve(self, session: MqttSession) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive(session), name="fleet-receive")
                await session.subscribe(self._topics[Channel.COMMAND], self._topics[Channel.DESIRED])
                await session.publish(self._topics[Channel.AVAILABILITY], ONLINE, retain=True)
                await self._publish_state(session)
                self._reported.reconnected()
                self.connected.set()
                self._report_drops()
                group.create_task(self._state_loop(session), name="fleet-state")
                group.create_task(self._send(session), name="fleet-send")
        except BaseExceptionGroup as group_error:
            match, rest = group_error.split(SinkError)
            if rest is not None or match is None:
                raise
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise leaf from None

    async def _publish_state(self, session: MqttSession) -> None:
        self._state_dirty.clear()
        state = self.state()
        await session.publish(self._topics[Channel.STATE], encode(state), retain=True)
        self._published_location = state.location
        self.stats.states += 1

    async def _state_loop(self, session: MqttSession) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.state_interval):
                    await self._state_dirty.wait()
            await asyncio.sleep(_MIN_STATE_GAP)  # coalesce a burst of changes into one retained state
            await self._publish_state(session)

    async def _send(self, session: MqttSession) -> None:
        """Send the outbox: this connection's messages first, then the backlog at the bounded rate."""
        outbox = self._outbox
        assert outbox is not None  # run() opens it before the connection loop starts
        loop = asyncio.get_running_loop()
        cutoff = outbox.next_seq - 1
        live_after = cutoff
        backlog_after = -1 if outbox.queued else cutoff
        rate = self.options.backfill_rate
        tokens, refilled = 1.0, loop.time()
        while True:
            self._wake.clear()
            await self._reported.send(functools.partial(session.publish, self._topics[Channel.REPORTED], retain=True))
            live = outbox.oldest(after=live_after, limit=16)
            for message in live:
                await self._publish_buffered(session, message, backfill=False)
                live_after = message.seq
            if backlog_after < cutoff:
                # One backlog message per round when the rate allows, even while live data keeps the
                # sender busy: the backlog always progresses, and live data never waits behind it.
                now = loop.time()
                tokens, refilled = min(max(1.0, rate), tokens + (now - refilled) * rate), now
                if tokens >= 1.0:
                    batch = outbox.oldest(after=backlog_after, up_to=cutoff, limit=1)
                    if not batch:
                        backlog_after = cutoff
                        _LOGGER.info("fleet: backlog sent")
                        self._state_dirty.set()
                        continue
                    tokens -= 1.0
                    await self._publish_buffered(session, batch[0], backfill=True)
                    backlog_after = batch[0].seq
                elif not live:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout((1.0 - tokens) / rate):
                            await self._wake.wait()
                continue
            if not live:
                await self._wake.wait()

    async def _publish_buffered(self, session: MqttSession, message: BufferedMessage, *, backfill: bool) -> None:
        payload = message.payload
        if backfill and payload.startswith(b"{"):
            # Live payloads leave `backfill` out (its default): marking one is adding the key.
            payload = _BACKFILL_MARK + payload[1:]
        await session.publish(self._topics[Channel(message.channel)], payload, retain=False)
        assert self._outbox is not None
        self._outbox.remove(message.seq)
        self.stats.sent += 1
        self.stats.backfilled += backfill
        self.stats.bytes += len(payload)

    # -- from the server -------------------------------------------------------------------------

    async def _receive(self, session: MqttSession) -> None:
        async for message in session.messages():
            if message.topic == self._topics[Channel.DESIRED]:
                self._take_desired(message.payload)
            elif message.topic == self._topics[Channel.COMMAND]:
                self._take_command(message.topic, message.payload)

    def _take_desired(self, payload: bytes) -> None:
        if not payload:
            return  # the server cleared it
        if len(payload) > (limit := MAX_PAYLOAD_BYTES[Channel.DESIRED]):
            digest = hashlib.sha256(payload).hexdigest()
            self._reported.put(
                self._reported_json("error", digest, f"desired state of {len(payload)} bytes, at most {limit}")
            )
            return
        if payload == self._desired_payload:
            return  # the broker re-delivers the retained message on every reconnect
        self._desired_payload = payload
        self._desired_event.set()

    def _take_command(self, topic_name: str, payload: bytes) -> None:
        try:
            command = self._screen.check(topic_name, payload, now=self._clock())
        except CommandRejected as exc:
            _LOGGER.warning("fleet: %s", exc)
            self.stats.commands_rejected += 1
            data: dict[str, str | int | float | bool | None] = {"reason": exc.reason}
            if exc.command_id is not None:
                data["command"] = exc.command_id
            self._append_event(PendingEvent(EventKind.COMMAND_REJECTED, detail=exc.detail[:1024], data=data))
            return
        try:
            detail = self._execute(command)
        except Exception as exc:
            _LOGGER.exception("fleet: command %s failed", command.id)
            self.stats.commands_rejected += 1
            data = {"reason": "failed", "command": command.id}
            self._append_event(PendingEvent(EventKind.COMMAND_REJECTED, detail=repr(exc)[:1024], data=data))
            return
        self.stats.commands_done += 1
        self._append_event(
            PendingEvent(
                EventKind.COMMAND_DONE, detail=detail, data={"command": command.id, "kind": command.kind.value}
            )
        )

    def _execute(self, command: CommandMessage) -> str:
        _LOGGER.info("fleet: command %s (%s)", command.id, command.kind.value)
        if command.kind is CommandKind.REFRESH_STATE:
            self._state_dirty.set()
            return "state republished"
        outputs = list(self._rediscover()) if self._rediscover is not None else []
        return f"discovery re-run: {', '.join(outputs)}" if outputs else "no output has a discovery to re-run"

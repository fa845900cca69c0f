"""HomeAssistantSink: publishes the hub's snapshots to MQTT with Home Assistant discovery.

Three long-lived tasks share the sink's in-memory view of every battery:

* the *consumer* reads the hub subscription, integrates energy and marks what changed; it never
  waits for the broker, so a broker outage loses no energy and never slows a poller;
* the *connection loop* connects (with capped, jittered backoff), then re-publishes everything
  current and keeps publishing what the consumer marks; after any reconnect or a Home Assistant
  birth message the per-connection caches are dropped, so discovery, availability and states are
  sent again in full;
* the *command worker* executes switch commands through :class:`BatteryControl` and publishes only
  the state read back from the BMS.

Why one long module: the three tasks share the per-battery view and the per-connection caches, and
what one task changes decides what another sends; split up, that state would be passed around in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from bmsgate import __version__
from bmsgate.errors import CommandRefused, DeviceError, SinkError
from bmsgate.homeassistant.discovery import (
    OFFLINE,
    ONLINE,
    DiscoveryContext,
    Registry,
    battery_configs,
    device_identity,
    encode_payload,
    gateway_configs,
    slug,
    stale_topics,
)
from bmsgate.homeassistant.energy import STATE_FILE_NAME, SinkState, write_json_atomic
from bmsgate.homeassistant.entities import (
    CommandResult,
    EntityDescription,
    Outcome,
    StateInputs,
    encode_inverter_state,
    present_entities,
)
from bmsgate.homeassistant.settings import BatteryInfo, LinkStats, MqttSettings
from bmsgate.homeassistant.state import StatePlan
from bmsgate.model import Alarm, BatterySnapshot, DeviceInfo
from bmsgate.runtime.backoff import Backoff
from bmsgate.runtime.cadence import sleep_until, tick_after
from bmsgate.runtime.cancellation import run_isolated
from bmsgate.runtime.hub import HubUpdate, SnapshotHub, Subscription
from bmsgate.runtime.wakeup import Wakeup

if TYPE_CHECKING:
    from bmsgate.mqtt.client import MqttSession

__all__ = [
    "BatteryControl",
    "HomeAssistantSink",
    "InverterStatusProvider",
    "LinkStatsProvider",
    "SinkStats",
]

_LOGGER = logging.getLogger(__name__)

LinkStatsProvider = Callable[[str], LinkStats | None]
InverterStatusProvider = Callable[[], Mapping[str, object] | None]

_SYNC_TIMEOUT: Final = 5.0
_GOODBYE_TIMEOUT: Final = 1.0
_STOP_GRACE: Final = 1.5
"""Seconds the connection loop gets to finish after a cancellation (goodbye, disconnect) before it is
cancelled again."""
_STOP_LIMIT: Final = 2.0
"""Seconds after which a connection loop that still runs despite repeated cancellation is abandoned."""
_SESSION_STOP_GRACE: Final = 0.25
_SESSION_STOP_LIMIT: Final = 0.5
_MIN_INVERTER_PERIOD: Final = 1.0
_REPUBLISH_SLACK: Final = 0.25
"""Seconds an unchanged inverter state may be republished early: without it every other periodic
republish was skipped when the timer's tick came a few milliseconds short of a whole interval."""
_COMMAND_QUEUE: Final = 16
_SWITCH_KEYS: Final = {"charge_enabled": "charge", "discharge_enabled": "discharge"}
_ACKED_STATE_PERIOD: Final = 10.0
"""State messages go at QoS 0 but one at least this often (s) at the configured QoS, whose PUBACK wait
still finds a broker that stopped answering within seconds (see docs/home-assistant.md, "QoS")."""


class BatteryControl(Protocol):
    """Writes to a BMS (implemented by the battery client)."""

    async def set_mosfets(
        self, battery_id: str, *, charge: bool | None = None, discharge: bool | None = None
    ) -> BatterySnapshot:
        """Switch the charge and/or discharge MOSFET and return the snapshot read back afterwards.

        Raises:
            CommandRefused: the BMS rejected the write or did not confirm it.
            DeviceError: the battery could not be reached.
        """
        ...


@dataclasses.dataclass(slots=True)
class SinkStats:
    """Counters for tests, benchmarks and diagnostics."""

    messages: int = 0
    bytes: int = 0
    connects: int = 0
    republishes: int = 0


@dataclasses.dataclass(slots=True)
class _Battery:
    info: BatteryInfo
    snapshot: BatterySnapshot | None = None
    device: DeviceInfo = dataclasses.field(default_factory=DeviceInfo)
    stale: bool = True
    identity: str | None = None
    rows: dict[str, EntityDescription] = dataclasses.field(default_factory=dict)
    plan: StatePlan | None = None  # `rows` compiled for the state message; None once rows were added
    config_topics: frozenset[str] = frozenset()
    """Config topics announced during this process (sticky: entities are never removed at runtime)."""
    last_command: CommandResult | None = None
    expire_after: int | None = None
    max_gap: float | None = None
    discovery_dirty: bool = False
    state_dirty: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _Command:
    battery_id: str
    key: str
    value: bool


class HomeAssistantSink:
    """Publishes batteries to Home Assistant over MQTT (see docs/home-assistant.md).

    Args:
        settings: the ``outputs.mqtt`` settings.
        batteries: metadata of every configured battery (others seen on the hub get defaults).
        control: MOSFET control; used only when ``settings.allow_control`` is true.
        link_stats: link statistics per battery id (link quality / RSSI entities).
        inverter_status: returns the inverter/bank status mapping (``InverterStatus.to_dict()``).
        sw_version: version shown in ``origin`` and the gateway device (default: bmsgate's).
    """

    name = "homeassistant"

    def __init__(
        self,
        settings: MqttSettings,
        batteries: Iterable[BatteryInfo] = (),
        *,
        control: BatteryControl | None = None,
        link_stats: LinkStatsProvider | None = None,
        inverter_status: InverterStatusProvider | None = None,
        sw_version: str | None = None,
    ) -> None:
        self.settings = settings
        self._infos = {info.battery_id: info for info in batteries}
        self._control = control if settings.allow_control else None
        if settings.allow_control and control is None:
            _LOGGER.warning("allow_control is set but no control is available; MOSFETs stay read-only")
        self._link_stats = link_stats
        self._inverter_status = inverter_status
        self._ctx = DiscoveryContext.from_settings(settings, sw_version=sw_version or __version__)
        self._topics = self._ctx.topics
        self._state = SinkState(settings.state_dir / STATE_FILE_NAME)
        self._state_dirty = False
        self._batteries: dict[str, _Battery] = {}
        self._hub: SnapshotHub | None = None
        self._wake = Wakeup()
        self._commands: asyncio.Queue[_Command] = asyncio.Queue(_COMMAND_QUEUE)
        self.stats = SinkStats()
        self.connected = asyncio.Event()
        """Set while a session is up and the initial publication is done (for tests and status)."""
        # Per-connection caches: cleared on every (re)connect and Home Assistant birth.
        self._published: dict[str, str] = {}
        self._published_availability: dict[str, str] = {}
        self._gateway_topics: frozenset[str] = frozenset()
        self._republish = True
        self._registry_dirty = True
        self._inverter_last: tuple[float, str] | None = None
        self._acked_state_at = -math.inf
        # Clean-up state from the retained registry, read once per process.
        self._registry_loaded = False
        self._previous: dict[str, frozenset[str]] = {}
        self._previous_gateway: frozenset[str] = frozenset()
        self._sync_event = asyncio.Event()
        self._registry_seen: Registry | None = None

    # -- public ----------------------------------------------------------------------------------

    async def run(self, hub: SnapshotHub) -> None:
        """Publish until cancelled; reconnects on its own. Never blocks the hub's producers."""
        self._hub = hub
        await asyncio.to_thread(self._state.load)
        self._state.energy.max_gap = self.settings.energy_max_gap or self._state.energy.max_gap
        subscription = hub.subscribe(self.name)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume(subscription), name="ha-consume")
                group.create_task(self._command_worker(), name="ha-commands")
                group.create_task(self._persist_loop(), name="ha-persist")
                group.create_task(self._mqtt(), name="ha-mqtt")
        finally:
            subscription.close()
            self._save_state()

    def request_rediscovery(self) -> None:
        """Publish discovery, availability and states again in full (the fleet's ``rediscover_outputs``)."""
        self.stats.republishes += 1
        self._republish = True
        self._wake.set()

    # -- hub side ----------------------------------------------------------------------------------

    async def _consume(self, subscription: Subscription) -> None:
        async for update in subscription:
            self._apply(update)
            # Drain what else is pending so one flush covers a burst of batteries.
            while (more := subscription.get_nowait()) is not None:
                self._apply(more)
            self._wake.set()

    def _battery(self, battery_id: str) -> _Battery:
        battery = self._batteries.get(battery_id)
        if battery is None:
            info = self._infos.get(battery_id) or BatteryInfo(battery_id)
            battery = self._batteries[battery_id] = _Battery(info)
            stale_after = self._hub.stale_after(battery_id) if self._hub else None
            if self.settings.expire_after is not None:
                battery.expire_after = self.settings.expire_after or None
            elif stale_after is not None:
                battery.expire_after = math.ceil(2 * stale_after)
            battery.max_gap = self.settings.energy_max_gap or stale_after
        return battery

    def _apply(self, update: HubUpdate) -> None:
        battery = self._battery(update.battery_id)
        snapshot = update.snapshot
        if snapshot is not None and (battery.snapshot is None or snapshot.timestamp > battery.snapshot.timestamp):
            self._take_snapshot(battery, snapshot)
        if battery.stale != update.stale:
            battery.stale = update.stale

    def _take_snapshot(self, battery: _Battery, snapshot: BatterySnapshot) -> None:
        battery_id = battery.info.battery_id
        self._state.energy.add(battery_id, snapshot.timestamp, snapshot.power, max_gap=battery.max_gap)
        self._state_dirty = True
        battery.snapshot = snapshot
        device = snapshot.device.merged_over(battery.device)
        if device != battery.device:
            battery.device = device
            battery.discovery_dirty = True
        if battery.identity is None:
            battery.identity = self._state.identities.get(battery_id) or device_identity(battery.info, device)
            self._state.identities[battery_id] = battery.identity
        alarms = battery.info.alarms if battery.info.alarms is not None else tuple(Alarm)
        for row in present_entities(self._inputs(battery), alarms=alarms, known=battery.rows):
            battery.rows[row.key] = row
            battery.plan = None
            battery.discovery_dirty = True
        battery.state_dirty = True

    def _inputs(self, battery: _Battery) -> StateInputs:
        assert battery.snapshot is not None  # callers check; a programming error otherwise
        battery_id = battery.info.battery_id
        return StateInputs(
            snapshot=battery.snapshot,
            energy=self._state.published_energy(battery_id),
            link=self._link_stats(battery_id) if self._link_stats else None,
            last_command=battery.last_command,
            control=self._control is not None,
        )

    # -- persistence -------------------------------------------------------------------------------

    async def _persist_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await sleep_until(tick_after(loop.time(), self.settings.energy_save_interval))
            if self._state_dirty:
                self._state_dirty = False
                # Snapshot the counters on the loop thread; only the file I/O runs in a worker thread.
                data = self._state.to_dict()
                try:
                    await asyncio.to_thread(write_json_atomic, self._state.path, data)
                except OSError as exc:
                    # The published counters stay where they are until a save succeeds.
                    self._state_dirty = True
                    _LOGGER.warning("cannot save %s: %s", self._state.path, exc)
                    continue
                changed = self._state.mark_saved(data)
                for battery_id in changed:
                    battery = self._batteries.get(battery_id)
                    if battery is not None and battery.snapshot is not None:
                        battery.state_dirty = True
                if changed:
                    self._wake.set()

    def _save_state(self) -> None:
        try:
            self._state.save()
        except OSError as exc:
            _LOGGER.warning("cannot save %s: %s", self._state.path, exc)

    # -- broker side -------------------------------------------------------------------------------

    async def _mqtt(self) -> None:
        """Run the connection loop so that cancelling it always ends it, within about two seconds.

        A plain child task is cancelled once; should that cancellation get lost (aiomqtt on Python 3.11,
        see :mod:`bmsgate.runtime.cancellation`), the task group would wait for it forever and SIGTERM
        would hang the process. Here it is cancelled again until it ends.
        """
        await run_isolated(self._connection_loop(), name="ha-connection", grace=_STOP_GRACE, limit=_STOP_LIMIT)

    async def _connection_loop(self) -> None:
        from bmsgate.mqtt import client as mqtt  # noqa: PLC0415 - aiomqtt is an optional extra

        backoff = Backoff(self.settings.reconnect_initial, self.settings.reconnect_max, jitter=0.25)
        failing_since: str | None = None
        while True:
            try:
                async with mqtt.connect(
                    self.settings, will_topic=self._topics.gateway_availability, will_payload=OFFLINE
                ) as session:
                    self.stats.connects += 1
                    backoff.reset()
                    if failing_since is not None:
                        _LOGGER.info("MQTT broker %s reachable again", self.settings.display_url())
                    else:
                        _LOGGER.info("connected to MQTT broker %s", self.settings.display_url())
                    failing_since = None
                    try:
                        await self._serve_isolated(session)
                    except asyncio.CancelledError:
                        # A clean shutdown sends no last will: say "offline" ourselves. Bounded with
                        # asyncio.timeout, not wait_for, which could swallow a second cancellation.
                        with contextlib.suppress(SinkError, TimeoutError):
                            async with asyncio.timeout(_GOODBYE_TIMEOUT):
                                await session.publish(self._topics.gateway_availability, OFFLINE, retain=True)
                        raise
            except SinkError as exc:
                self.connected.clear()
                delay = backoff.next_delay()
                if failing_since is None:
                    failing_since = str(exc)
                    _LOGGER.warning("MQTT: %s; retrying in %.1f s (logged once until it recovers)", exc, delay)
                else:
                    _LOGGER.debug("MQTT still failing: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()

    async def _serve_isolated(self, session: MqttSession) -> None:
        """Run one session in its own task (see :func:`run_isolated`).

        Its own task keeps a failed session from leaving the reconnect loop "cancelling" on Python 3.11.
        When cancelled, the session is stopped within half a second, leaving time for the goodbye.
        """
        await run_isolated(
            self._serve(session), name="ha-session", grace=_SESSION_STOP_GRACE, limit=_SESSION_STOP_LIMIT
        )

    async def _serve(self, session: MqttSession) -> None:
        self._republish = True
        self._acked_state_at = -math.inf  # the session's first state is acknowledged
        self._registry_seen = None
        self._sync_event = asyncio.Event()
        sync_topic = self._topics.sync(self.settings.effective_client_id)
        filters = [self._topics.ha_status, self._topics.registry, sync_topic]
        if self._control is not None:
            filters.append(self._topics.command_filter)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive(session, sync_topic), name="ha-receive")
                await session.subscribe(*filters)
                # The broker delivers retained messages (our registry) before it routes this
                # message back to us, so once it arrives the registry has been seen if it exists.
                await session.publish(sync_topic, "sync", retain=False, qos=1)
                try:
                    async with asyncio.timeout(_SYNC_TIMEOUT):
                        await self._sync_event.wait()
                except TimeoutError:
                    _LOGGER.debug("no sync echo from the broker; skipping clean-up")
                else:
                    await self._clean_up(session)
                await self._publish(session, self._topics.gateway_availability, ONLINE, retain=True)
                if self._hub is not None:
                    for update in self._hub.current():
                        self._apply(update)
                group.create_task(self._publish_loop(session), name="ha-publish")
        except BaseExceptionGroup as group_error:
            error = _single_sink_error(group_error)
            if error is None:
                raise
            raise error from None

    async def _receive(self, session: MqttSession, sync_topic: str) -> None:
        async for message in session.messages():
            if message.topic == sync_topic:
                self._sync_event.set()
            elif message.topic == self._topics.registry:
                if not self._sync_event.is_set():
                    self._registry_seen = Registry.decode(message.payload)
            elif message.topic == self._topics.ha_status:
                if message.payload.strip().lower() == ONLINE.encode() and not message.retain:
                    _LOGGER.info("Home Assistant came online; re-publishing discovery and states")
                    self.stats.republishes += 1
                    self._republish = True
                    self._wake.set()
            else:
                self._on_command(message.topic, message.payload)

    async def _clean_up(self, session: MqttSession) -> None:
        """Remove what a previous run announced but is no longer configured (once per process)."""
        registry = self._registry_seen
        if self._registry_loaded:
            return
        self._registry_loaded = True
        if registry is None:
            return
        configured = set(self._infos) | set(self._hub.battery_ids() if self._hub else ())
        for battery_id, topics in registry.batteries.items():
            if battery_id in configured:
                if battery_id in self._batteries and self._batteries[battery_id].config_topics:
                    await self._remove(session, stale_topics(topics, self._batteries[battery_id].config_topics))
                else:
                    self._previous[battery_id] = topics
                continue
            _LOGGER.info("removing %d entities of %s (no longer configured)", len(topics), battery_id)
            await self._remove(session, sorted(topics))
            for topic in (self._topics.battery_availability(battery_id), self._topics.battery_state(battery_id)):
                await self._publish(session, topic, "", retain=True)
        self._previous_gateway = registry.gateway
        self._registry_dirty = True

    async def _remove(self, session: MqttSession, topics: Iterable[str]) -> None:
        for topic in topics:
            await self._publish(session, topic, "", retain=True)
            self._published.pop(topic, None)

    async def _publish_loop(self, session: MqttSession) -> None:
        period = self.settings.inverter_interval if self._inverter_status is not None else None
        first = True
        while True:
            self._wake.clear()
            await self._flush(session)
            if first:
                first = False
                self.connected.set()
            # On the shared grid (runtime/cadence.py) when nothing else wakes it: the inverter's periodic
            # state goes out in a wake-up the gateway has anyway.
            deadline = None if period is None else tick_after(asyncio.get_running_loop().time(), period)
            await self._wake.wait_until(deadline)
            if self._hub is not None:
                # One flush for the round's snapshots (runtime/rounds.py), not one per battery.
                await self._hub.rounds.settled()

    async def _flush(self, session: MqttSession) -> None:
        if self._republish:
            self._republish = False
            self._published.clear()
            self._published_availability.clear()
            self._registry_dirty = True
            self._inverter_last = None
            self._gateway_topics = frozenset()
            for battery in self._batteries.values():
                battery.discovery_dirty = battery.state_dirty = battery.snapshot is not None
        if self.settings.discovery and not self._gateway_topics:
            configs = gateway_configs(self._ctx, inverter=self._inverter_status is not None)
            await self._publish_configs(session, configs)
            self._gateway_topics = frozenset(configs)
            await self._remove(session, stale_topics(self._previous_gateway, self._gateway_topics))
            self._previous_gateway = frozenset()
        for battery in list(self._batteries.values()):
            if battery.snapshot is not None:
                await self._flush_battery(session, battery)
        if self._registry_dirty and self.settings.discovery:
            self._registry_dirty = False
            await self._publish(session, self._topics.registry, self._registry().encode(), retain=True)
        if self._inverter_status is not None:
            await self._flush_inverter(session)

    async def _flush_battery(self, session: MqttSession, battery: _Battery) -> None:
        battery_id = battery.info.battery_id
        if battery.discovery_dirty and self.settings.discovery and battery.identity is not None:
            battery.discovery_dirty = False
            configs = battery_configs(
                self._ctx,
                battery.info,
                identity=battery.identity,
                device=battery.device,
                rows=list(battery.rows.values()),
                expire_after=battery.expire_after,
            )
            await self._publish_configs(session, configs)
            if battery.config_topics != frozenset(configs):
                battery.config_topics = frozenset(configs)
                self._registry_dirty = True
            previous = self._previous.pop(battery_id, None)
            if previous is not None:
                await self._remove(session, stale_topics(previous, battery.config_topics))
        availability = OFFLINE if battery.stale else ONLINE
        if self._published_availability.get(battery_id) != availability:
            await self._publish(session, self._topics.battery_availability(battery_id), availability, retain=True)
            if battery_id in self._published_availability or availability == OFFLINE:
                _LOGGER.info("%s: published availability %s", battery_id, availability)
            self._published_availability[battery_id] = availability
        if battery.state_dirty:
            battery.state_dirty = False
            if battery.plan is None:
                battery.plan = StatePlan(battery.rows.values())
            state = battery.plan.build(self._inputs(battery))
            await self._publish_state(session, self._topics.battery_state(battery_id), encode_payload(state))

    async def _publish_configs(self, session: MqttSession, configs: Mapping[str, Mapping[str, object]]) -> None:
        for topic, payload in configs.items():
            text = encode_payload(payload)
            if self._published.get(topic) != text:
                await self._publish(session, topic, text, retain=True)
                self._published[topic] = text

    async def _flush_inverter(self, session: MqttSession) -> None:
        assert self._inverter_status is not None
        now = time.monotonic()
        if self._inverter_last is not None and now - self._inverter_last[0] < _MIN_INVERTER_PERIOD:
            # Not due yet whatever it says: not even encoded (the sink flushes on every battery update).
            return
        status = self._inverter_status()
        if status is None:
            return
        text = encode_payload(encode_inverter_state(status))
        if self._inverter_last is not None:
            last_time, last_text = self._inverter_last
            # Less the slack: the grid's wake-up for this republish can come a little less than a whole
            # interval after the last one went out (that one left later in its own wake-up).
            if text == last_text and now - last_time < self.settings.inverter_interval - _REPUBLISH_SLACK:
                return
        await self._publish_state(session, self._topics.inverter_state, text)
        self._inverter_last = (now, text)

    def _registry(self) -> Registry:
        batteries = dict(self._previous)
        for battery_id, battery in self._batteries.items():
            if battery.config_topics:
                batteries[battery_id] = battery.config_topics
        return Registry(batteries=batteries, gateway=self._gateway_topics | self._previous_gateway)

    async def _publish_state(self, session: MqttSession, topic: str, payload: str) -> None:
        # Superseded on the next poll and re-sent in full after any reconnect, a state loses nothing at
        # QoS 0, and Home Assistant subscribes to it at QoS 0 anyway; a PUBACK cost a wake-up per message.
        now = time.monotonic()
        acknowledged = now - self._acked_state_at >= _ACKED_STATE_PERIOD
        if acknowledged:
            self._acked_state_at = now
        qos = None if acknowledged else 0
        await self._publish(session, topic, payload, retain=self.settings.retain_states, qos=qos)

    async def _publish(
        self, session: MqttSession, topic: str, payload: str, *, retain: bool, qos: int | None = None
    ) -> None:
        await session.publish(topic, payload, retain=retain, qos=qos)
        self.stats.messages += 1
        self.stats.bytes += len(topic) + len(payload.encode())

    # -- control -----------------------------------------------------------------------------------

    def _on_command(self, topic: str, payload: bytes) -> None:
        parsed = self._topics.parse_command(topic)
        if parsed is None or self._control is None:
            return
        battery_slug, key = parsed
        battery = next((b for b in self._batteries.values() if slug(b.info.battery_id) == battery_slug), None)
        text = payload.decode(errors="replace").strip().upper()
        if battery is None or key not in _SWITCH_KEYS or text not in ("ON", "OFF"):
            _LOGGER.warning("ignoring command %r on %s", text, topic)
            return
        try:
            self._commands.put_nowait(_Command(battery.info.battery_id, key, text == "ON"))
        except asyncio.QueueFull:
            _LOGGER.warning("%s: too many pending commands; dropping %s=%s", battery.info.battery_id, key, text)

    async def _command_worker(self) -> None:
        while True:
            command = await self._commands.get()
            await self._execute(command)

    async def _execute(self, command: _Command) -> None:
        assert self._control is not None
        battery = self._battery(command.battery_id)
        what = _SWITCH_KEYS[command.key]
        label = f"{what}={'on' if command.value else 'off'}"
        _LOGGER.info("%s: switching %s MOSFET %s", command.battery_id, what, "on" if command.value else "off")
        outcome: Outcome
        error: str | None = None
        try:
            if what == "charge":
                snapshot = await self._control.set_mosfets(command.battery_id, charge=command.value)
            else:
                snapshot = await self._control.set_mosfets(command.battery_id, discharge=command.value)
        except CommandRefused as exc:
            outcome, error = "refused", str(exc)
        except DeviceError as exc:
            outcome, error = "unconfirmed", str(exc)
        else:
            if battery.snapshot is None or snapshot.timestamp > battery.snapshot.timestamp:
                self._take_snapshot(battery, snapshot)
            actual = getattr(snapshot, command.key)
            if actual is command.value:
                outcome = "confirmed"
            else:
                outcome, error = "unconfirmed", f"read back {command.key}={actual}"
        if error is None:
            _LOGGER.info("%s: %s confirmed", command.battery_id, label)
        else:
            _LOGGER.warning("%s: %s %s: %s", command.battery_id, label, outcome, error)
        battery.last_command = CommandResult(label, outcome, error, time.time())
        # Publish the state as it is now: HA's switch shows what the BMS did, not what was asked.
        battery.state_dirty = battery.snapshot is not None
        self._wake.set()


def _single_sink_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The SinkError that ended a session's task group; None when something else failed too."""
    match, rest = group.split(SinkError)
    if rest is not None or match is None:
        return None
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf

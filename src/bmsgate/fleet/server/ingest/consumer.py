"""One ingest consumer: every gateway's availability, state, telemetry and events from the broker into the store.

The path of a message: MQTT (QoS 1, persistent session, manual acknowledgement; read in batches, one
wake-up for everything that arrived, see :meth:`MqttSession.message_batches`) → :func:`protocol.decode` →
a bounded backlog → a batch (up to ``max_batch`` messages or ``max_delay_s``) → one store transaction →
acknowledgement to the broker (the batch's PUBACKs in one write) → the live feed and the batch observers
(the alarm engine).

Nothing vanishes silently:

- a bad message is refused with a counted reason (:attr:`IngestCounters.rejected`), logged (rate limited)
  and acknowledged — it would be refused again;
- a message is acknowledged only after its batch committed, so if ingest dies the broker sends it again
  (the store is idempotent: it is stored once);
- a slow or failing database fills the backlog; then ingest stops reading, stops acknowledging, and the
  broker stops sending once its in-flight window (``max_inflight_messages``) is full and queues the rest
  for the persistent session (``max_queued_messages`` on the broker: set it large). A failed write is
  retried with backoff, never dropped. Each wait is counted (:attr:`IngestCounters.backpressure_waits`);
- a batch that keeps failing is written message by message: if the store takes some, the ones it cannot
  take are refused as ``unstorable``; if it takes none, the database is down and the batch waits.

Several ingest processes can share the load: with ``share_group`` set, telemetry and events are
subscribed as ``$share/<group>/...`` (each message goes to one member); availability and state stay
plain subscriptions, since shared subscriptions receive no retained messages.

Where the messages come from is an :class:`IngestSource`: the broker over MQTT (:class:`MqttSource`, the
default) or, in cluster mode, a JetStream consumer shared by every worker
(:class:`bmsgate.fleet.server.nats_ingest.JetStreamSource`). Everything after the read (decode, backlog,
batches, store, acknowledgement after commit, live feed, observers) is the same code for both.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from bmsgate.errors import SinkError
from bmsgate.fleet.protocol import (
    Channel,
    EventMessage,
    FleetMessageError,
    GatewayMessage,
    StateMessage,
    TelemetryMessage,
    decode,
    topic,
)
from bmsgate.fleet.server.ingest.settings import IngestSettings
from bmsgate.fleet.server.ingest.sources import IngestSession, IngestSource, MqttSource, ingest_filters
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.store.repository import Availability, IngestBatch, Repository, WriteResult
from bmsgate.fleet.server.store.snapshots import full_form, read_snapshot
from bmsgate.mqtt.client import IncomingMessage
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.runtime.backoff import Backoff

__all__ = [
    "BatchObserver",
    "CommittedMessage",
    "Ingest",
    "IngestCounters",
    "IngestSession",
    "IngestSettings",
    "IngestSource",
    "MqttSource",
    "batch_of_messages",
    "decode_incoming",
    "notify_observers",
    "publish_batch",
    "refuse_future",
    "tune_gc_for_ingest",
]

_log = logging.getLogger(__name__)
_LATENCY_WINDOW: Final = 10_000
_REJECT_LOG_INTERVAL_S: Final = 10.0
_BATCH_ATTEMPTS: Final = 3
"""Tries of a whole batch before its messages are written one by one."""
_GC_THRESHOLDS: Final = (50_000, 50, 100)
"""Python's default (700, 10, 10) runs a young collection every 700 allocations; decoding a batch allocates
about a thousand objects per message, and each collection also walks every backlogged message's objects.
Measured: 163 → 140 us of CPU a message."""


def tune_gc_for_ingest() -> None:
    """Collect garbage less often in a process that ingests (the server process, an ingest worker).

    Process-wide, so the command that owns the process calls it, not the library. Ingest makes few reference
    cycles; what it allocates is freed by reference counting.
    """
    gc.freeze()  # what was loaded at start-up is never garbage: no collection walks it again
    gc.set_threshold(*_GC_THRESHOLDS)


_RESULT_FIELDS: Final = (
    "samples_written",
    "samples_duplicate",
    "events_written",
    "events_duplicate",
    "snapshots_rejected",
)


CommittedMessage = tuple[str, bytes, bool, float]
"""A stored message as received: ``(topic, payload, retained, received_at)``."""


class BatchObserver(Protocol):
    """Told about every committed batch (e.g. the alarm engine). Must not block: queue and return."""

    def observe(self, batch: IngestBatch, result: WriteResult) -> None:
        """A batch was committed."""


@dataclasses.dataclass(slots=True)
class IngestCounters:
    """What ingest did since it started (for the API's metrics)."""

    received: int = 0
    stored: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Messages committed, per channel."""
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Messages refused, per reason (``topic``, ``too_large``, ``json``, ``schema``, ``version``,
    ``gateway_mismatch``, ``channel`` (a channel ingest does not read), ``snapshot`` (one battery's
    snapshot; the rest of that message is stored), ``unstorable`` (the store failed on it while it
    stored other messages: the message itself is the problem), ``future`` (timed too far ahead of the
    server's clock: :attr:`IngestSettings.future_tolerance_s`))."""
    samples_written: int = 0
    samples_duplicate: int = 0
    events_duplicate: int = 0
    batches: int = 0
    store_failures: int = 0
    """Batch writes that failed (each try counts)."""
    backpressure_waits: int = 0
    """Times the queue was full and reading from the broker paused."""
    publish_failures: int = 0
    """Stored messages that could not be put on the live feed (a bug, logged); ingest went on."""
    connects: int = 0
    queued: int = 0
    latencies: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=_LATENCY_WINDOW)
    )
    """Sampling time → commit (s) of the last live (not backfilled) telemetry messages."""

    def latency_percentile(self, fraction: float) -> float | None:
        """A percentile of :attr:`latencies` (None before any)."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def to_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "received": self.received,
            "stored": dict(self.stored),
            "rejected": dict(self.rejected),
            "samples_written": self.samples_written,
            "samples_duplicate": self.samples_duplicate,
            "events_duplicate": self.events_duplicate,
            "batches": self.batches,
            "store_failures": self.store_failures,
            "backpressure_waits": self.backpressure_waits,
            "publish_failures": self.publish_failures,
            "connects": self.connects,
            "queued": self.queued,
            "latency_p50_s": self.latency_percentile(0.5),
            "latency_p99_s": self.latency_percentile(0.99),
        }


@dataclasses.dataclass(slots=True)
class _Item:
    decoded: GatewayMessage
    incoming: IncomingMessage
    session: IngestSession
    received_at: float


class _Backlog:
    """Decoded messages waiting for the store, in arrival order; "full" at ``limit`` (one event loop)."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[_Item] = collections.deque()
        self._limit = limit
        self._added = asyncio.Event()
        self._taken = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._limit

    async def wait_for_room(self) -> None:
        while self.full():
            self._taken.clear()
            await self._taken.wait()

    def extend(self, items: list[_Item]) -> None:
        if items:
            self._items.extend(items)
            self._added.set()

    async def wait_for_items(self) -> None:
        while not self._items:
            self._added.clear()
            await self._added.wait()

    def take(self, limit: int) -> list[_Item]:
        items = self._items
        count = min(limit, len(items))
        taken = [items.popleft() for _ in range(count)]
        if taken:
            self._taken.set()
        return taken


class Ingest:
    """One ingest consumer. ``await run()`` until cancelled; reconnects by itself.

    ``broker``: the MQTT broker's settings, or any :class:`IngestSource` (cluster mode: JetStream).
    """

    def __init__(
        self,
        store: Repository,
        broker: BrokerSettings | IngestSource,
        *,
        feed: LiveFeed | None = None,
        settings: IngestSettings | None = None,
        observers: Sequence[BatchObserver] = (),
        committed: Callable[[list[CommittedMessage], WriteResult], None] | None = None,
    ) -> None:
        self.store = store
        self.committed = committed
        """Told each committed batch as received (an ingest worker hands it to the server process)."""
        self.source: IngestSource = MqttSource(broker) if isinstance(broker, BrokerSettings) else broker
        self.feed = feed
        self.settings = settings = settings or IngestSettings()
        self.observers = list(observers)
        self.counters = IngestCounters()
        self._backlog = _Backlog(settings.queue_limit)
        self._session: IngestSession | None = None
        self._last_reject_log = 0.0
        self._suppressed_rejects = 0
        self.connected = asyncio.Event()
        """Set while subscribed (tests and the server's health check wait on it)."""

    def filters(self) -> list[str]:
        """The subscription filters (on an MQTT source)."""
        return ingest_filters(self.settings)

    async def run(self) -> None:
        """Read and write until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_loop(), name="ingest-write")
            group.create_task(self._read_loop(), name="ingest-read")

    # -- reading ---------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        source = self.source
        backoff = Backoff(source.reconnect_initial, source.reconnect_max)
        while True:
            try:
                async with source.open(self.settings) as session:
                    self._session = session
                    self.counters.connects += 1
                    self.connected.set()
                    backoff.reset()
                    _log.info("ingest subscribed at %s", source.display_url())
                    async for incoming in session.message_batches():
                        await self._accept(session, incoming)
            except SinkError as exc:
                _log.warning("ingest: broker session ended: %s", exc)
            finally:
                self._session = None
                self.connected.clear()
            await asyncio.sleep(backoff.next_delay())

    async def _accept(self, session: IngestSession, incoming: list[IncomingMessage]) -> None:
        self.counters.received += len(incoming)
        received_at = time.time()
        tolerance = self.settings.future_tolerance_s
        accepted: list[_Item] = []
        refused: list[IncomingMessage] = []
        for message in incoming:
            try:
                decoded = decode_incoming(message.topic, message.payload)
                refuse_future(decoded, received_at, tolerance)
            except FleetMessageError as exc:
                self._reject(exc.reason, str(exc))
                refused.append(message)
                continue
            accepted.append(_Item(decoded, message, session, received_at))
        if refused:
            session.ack_many(refused)
        if self._backlog.full():
            self.counters.backpressure_waits += 1
            _log.warning("ingest: %d messages wait for the store; pausing the broker", len(self._backlog))
            await self._backlog.wait_for_room()
        self._backlog.extend(accepted)
        self.counters.queued = len(self._backlog)

    def _reject(self, reason: str, detail: str) -> None:
        self.counters.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_reject_log >= _REJECT_LOG_INTERVAL_S:
            more = f" (+{self._suppressed_rejects} more since the last report)" if self._suppressed_rejects else ""
            _log.warning("ingest refused a message: %s%s", detail, more)
            self._last_reject_log = now
            self._suppressed_rejects = 0
        else:
            self._suppressed_rejects += 1

    # -- writing ---------------------------------------------------------------------------------------

    async def _next_batch(self) -> list[_Item]:
        backlog, limit = self._backlog, self.settings.max_batch
        await backlog.wait_for_items()
        items = backlog.take(limit)
        deadline = time.monotonic() + self.settings.max_delay_s
        while len(items) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await backlog.wait_for_items()
            except TimeoutError:
                break
            items += backlog.take(limit - len(items))
        self.counters.queued = len(backlog)
        return items

    async def _write_loop(self) -> None:
        retry = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            items, batch, result = await self._write(await self._next_batch(), retry)
            retry.reset()
            committed = time.time()
            self._ack(items)
            self._count(items, batch, result, committed)
            if self.committed is not None:
                try:
                    self.committed(
                        [
                            (item.incoming.topic, item.incoming.payload, item.incoming.retain, item.received_at)
                            for item in items
                        ],
                        result,
                    )
                except Exception:  # noqa: BLE001 - the data is stored; a failing hand-over must not stop ingest
                    self.counters.publish_failures += 1
                    _log.exception("ingest: handing a stored batch on failed")
            if not publish_batch(self.feed, batch):
                self.counters.publish_failures += 1
            notify_observers(self.observers, batch, result)

    def _ack(self, items: list[_Item]) -> None:
        # An item from a session that has ended is sent again by the broker: no ack (stored once).
        session = self._session
        if session is not None:
            with contextlib.suppress(Exception):
                session.ack_many([item.incoming for item in items if item.session is session])

    async def _write(self, items: list[_Item], retry: Backoff) -> tuple[list[_Item], IngestBatch, WriteResult]:
        """Store a batch; return what was stored. A database outage is waited out, a poison message refused.

        The batch is tried :data:`_BATCH_ATTEMPTS` times with backoff, then each message once on its own.
        If some of them are stored, the database works and the others are messages it cannot take: they are
        refused (``unstorable``) and acknowledged. If none is, the database is down: nothing is dropped, the
        whole batch (plus what arrived meanwhile, so a lone poison message meets a storable one) is retried
        after a backoff.
        """
        while True:
            batch = _batch_of(items)
            for attempt in range(_BATCH_ATTEMPTS):
                try:
                    return items, batch, await self.store.write_batch(batch)
                except Exception as exc:  # noqa: BLE001 - a bug in the store is a failure like the database's
                    self.counters.store_failures += 1
                    if attempt + 1 < _BATCH_ATTEMPTS:
                        delay = retry.next_delay()
                        _log.warning("ingest: store write failed (%s); retrying in %.1f s", exc, delay)
                        await asyncio.sleep(delay)
            if len(items) > 1:
                _log.warning("ingest: a batch of %d messages keeps failing; writing them one by one", len(items))
                stored, result = await self._write_one_by_one(items)
                if stored:
                    return stored, _batch_of(stored), result
            delay = retry.next_delay()
            _log.warning("ingest: the store takes nothing (database down?); retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            items += self._take_queued(self.settings.max_batch - len(items))

    def _take_queued(self, limit: int) -> list[_Item]:
        taken = self._backlog.take(limit)
        self.counters.queued = len(self._backlog)
        return taken

    async def _write_one_by_one(self, items: list[_Item]) -> tuple[list[_Item], WriteResult]:
        """Write each message on its own; refuse a failing one only if it fails again once others were stored.

        The second try matters when the database comes back during the first pass: the messages that failed
        before it did are not poison, and refusing (and acknowledging) them would lose them.
        """
        stored: list[_Item] = []
        totals = collections.Counter[str](dict.fromkeys(_RESULT_FIELDS, 0))

        async def write_each(candidates: list[_Item]) -> list[tuple[_Item, Exception]]:
            failed: list[tuple[_Item, Exception]] = []
            for item in candidates:
                try:
                    result = await self.store.write_batch(_batch_of([item]))
                except Exception as exc:  # noqa: BLE001 - judged below: poison or outage
                    failed.append((item, exc))
                    continue
                stored.append(item)
                for name in _RESULT_FIELDS:
                    totals[name] += getattr(result, name)
            return failed

        failed = await write_each(items)
        if stored and failed:
            failed = await write_each([item for item, _ in failed])
        if stored:
            for item, error in failed:
                self._reject("unstorable", f"the store cannot take a message on {item.incoming.topic}: {error}")
            self._ack([item for item, _ in failed])
        return stored, WriteResult(**totals)

    def _count(self, items: list[_Item], batch: IngestBatch, result: WriteResult, committed: float) -> None:
        counters = self.counters
        counters.batches += 1
        for item in items:
            counters.stored[item.decoded.channel.value] += 1
        counters.samples_written += result.samples_written
        counters.samples_duplicate += result.samples_duplicate
        counters.events_duplicate += result.events_duplicate
        if result.snapshots_rejected:
            counters.rejected["snapshot"] += result.snapshots_rejected
        counters.latencies.extend(committed - message.at for message, _ in batch.telemetry if not message.backfill)


def notify_observers(observers: Sequence[BatchObserver], batch: IngestBatch, result: WriteResult) -> None:
    """Hand a committed batch to each observer; one that fails is logged, the others still see it."""
    for observer in observers:
        try:
            observer.observe(batch, result)
        except Exception:  # noqa: BLE001 - an observer's bug must not stop ingest; it is logged
            _log.exception("ingest: batch observer %r failed", observer)


def publish_batch(feed: LiveFeed | None, batch: IngestBatch) -> bool:
    """Put a committed batch on the live feed (nothing to do without subscribers); False if that failed.

    The data is stored either way: a failure here (a bug) is logged, and ingest goes on.
    """
    if feed is None or not feed.subscriber_count:
        return True  # building full snapshots costs; nobody is watching
    try:
        _publish(feed, batch)
    except Exception:  # noqa: BLE001 - the data is stored; the live feed missing it must not stop ingest
        _log.exception("ingest: publishing a stored batch on the live feed failed")
        return False
    return True


def _publish(feed: LiveFeed, batch: IngestBatch) -> None:
    for gateway, availability, received in batch.availability:
        feed.publish(
            LiveUpdate(
                kind=LiveKind.GATEWAY,
                gateway=gateway,
                at=received,
                data={"online": availability is Availability.ONLINE},
            )
        )
    for state, received in batch.states:
        feed.publish(LiveUpdate(kind=LiveKind.GATEWAY, gateway=state.gateway, at=received, data=_state_data(state)))
    for message, received in batch.telemetry:
        data = _telemetry_data(message, received)
        feed.publish(LiveUpdate(kind=LiveKind.TELEMETRY, gateway=message.gateway, at=message.at, data=data))
    for event, _ in batch.events:
        feed.publish(
            LiveUpdate(
                kind=LiveKind.EVENT,
                gateway=event.gateway,
                at=event.at,
                data=event.model_dump(mode="json", exclude={"v", "gateway"}),
            )
        )


_INGEST_CHANNELS: Final = frozenset({Channel.AVAILABILITY, Channel.STATE, Channel.TELEMETRY, Channel.EVENT})


def decode_incoming(topic: str, payload: bytes) -> GatewayMessage:
    """Decode one received message of a channel ingest reads.

    Raises:
        FleetMessageError: the message is refused; ``reason`` says why (``channel`` for a channel ingest
            does not read).
    """
    decoded = decode(topic, payload)
    if decoded.channel not in _INGEST_CHANNELS:
        raise FleetMessageError("channel", "not a channel ingest reads", topic=topic)
    return decoded


def refuse_future(decoded: GatewayMessage, received_at: float, tolerance_s: float) -> None:
    """Refuse a state, telemetry or event message timed more than `tolerance_s` after `received_at`.

    Raises:
        FleetMessageError: reason ``future``.
    """
    message = decoded.message
    if isinstance(message, StateMessage):
        at = message.sent_at
    elif isinstance(message, TelemetryMessage | EventMessage):
        at = message.at
    else:
        return
    if at > received_at + tolerance_s:
        raise FleetMessageError(
            "future",
            f"timed {at - received_at:.0f} s ahead of the server's clock",
            topic=topic(decoded.gateway, decoded.channel),
        )


def _batch_of(items: list[_Item]) -> IngestBatch:
    return batch_of_messages([(item.decoded, item.incoming.retain, item.received_at) for item in items])


def batch_of_messages(messages: Sequence[tuple[GatewayMessage, bool, float]]) -> IngestBatch:
    """The store batch of decoded ``(message, retained, received_at)`` s."""
    batch = IngestBatch()
    for decoded, retained, received in messages:
        message = decoded.message
        if decoded.channel is Channel.AVAILABILITY:
            # A retained availability at subscribe time is old news, not a sign of life.
            seen = 0.0 if retained else received
            online = Availability.ONLINE if decoded.online else Availability.OFFLINE
            batch.availability.append((decoded.gateway, online, seen))
        elif isinstance(message, StateMessage):
            batch.states.append((message, min(received, message.sent_at) if retained else received))
        elif isinstance(message, TelemetryMessage):
            batch.telemetry.append((message, received))
        elif isinstance(message, EventMessage):
            batch.events.append((message, received))
    return batch


def _state_data(state: StateMessage) -> dict[str, object]:
    return state.model_dump(mode="json", exclude={"v", "gateway"})


def _telemetry_data(message: TelemetryMessage, received: float) -> dict[str, object]:
    # `received` is the store's last-seen time: the overview read model updates a summary from this alone.
    batteries: dict[str, object] = {}
    for reading in message.batteries:
        snapshot = None
        if reading.snapshot is not None:
            try:
                snapshot = full_form(read_snapshot(reading.snapshot))
            except (ValueError, TypeError, ArithmeticError):
                continue  # refused by the store too (counted there)
        batteries[reading.id] = {"age_s": reading.age_s, "stale": reading.stale, "snapshot": snapshot}
    return {
        "at": message.at,
        "received": received,
        "backfill": message.backfill,
        "batteries": batteries,
        "inverter": message.inverter,
    }

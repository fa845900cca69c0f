"""Cluster mode's committed-batch fan-out: every server process's live feed sees every gateway's updates.

With several server processes (``fleet serve --cluster ... --processes N``) each one's ingest takes only some
of the messages from the shared JetStream consumer. After a batch committed, its ingest publishes the batch
(the messages as received, in the ingest workers' frame format, :func:`~.ingest.workers.encode_frame`) on
the plain core-NATS subject :data:`COMMITTED_SUBJECT`; every process, itself included, holds an ordinary
subscription (not a queue group) on it and hands what arrives to its live feed and its batch observers
(the alarm engine, through :class:`~.leadership.LeaderOnly` so only the leader evaluates), exactly as an
in-process ingest does. The only module besides :mod:`.nats_ingest` that imports ``nats``.

Why core NATS and not the store: the feed and the alarm engine need each committed batch once, soon, and
nothing more; core NATS delivers at most once, to every subscriber, in ~ms, and costs the cluster one
fan-out per batch (not per message). What it does not give: a batch published while the publisher's node
is going away, or while a subscriber is disconnected, is lost to that subscriber. For the live feed that
is what a slow websocket client gets anyway (best effort; the dashboard reloads); for the alarm engine it
is one batch's evaluation: the next telemetry of that gateway is evaluated again, and the silence
(no-data) checks read the store. Stored data is never at stake: this runs only after commit.

The few updates that only one process makes (an alarm opened or closed, a rollout's progress: the
leader's; a gateway deleted: the process that answered that request) go the same way on
:data:`LIVE_SUBJECT` as JSON (:class:`SharedLiveFeed`), so every process's dashboard clients see them; an
alarm closed or deleted through any process's API is told to every alarm engine on :data:`FORGET_SUBJECT`
(so the leader's can open it again while the condition holds).

A batch bigger than :attr:`CommittedBroadcast.chunk_bytes` goes as several frames (NATS's ``max_payload``
is 1 MB by default). Outgoing frames wait in a bounded queue: when NATS is unreachable the oldest are
dropped and counted (:attr:`CommittedBroadcast.dropped`), so ingest never waits for the fan-out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

import nats
import nats.errors

from bmsgate.fleet.protocol import FleetMessageError
from bmsgate.fleet.server.ingest import BatchObserver, batch_of_messages, decode_incoming, publish_batch
from bmsgate.fleet.server.ingest.consumer import CommittedMessage, notify_observers
from bmsgate.fleet.server.ingest.workers import WorkerError, decode_batch_frame, encode_frame
from bmsgate.fleet.server.live import LiveFeed, LiveKind, LiveUpdate
from bmsgate.fleet.server.store.repository import WriteResult
from bmsgate.runtime.backoff import Backoff

__all__ = [
    "COMMITTED_SUBJECT",
    "FORGET_SUBJECT",
    "LIVE_SUBJECT",
    "CommittedBroadcast",
    "SharedLiveFeed",
    "committed_frames",
    "parse_live_update",
]

_log = logging.getLogger(__name__)

COMMITTED_SUBJECT: Final = "bmsgate.fleet.committed"
LIVE_SUBJECT: Final = "bmsgate.fleet.live"
FORGET_SUBJECT: Final = "bmsgate.fleet.alarm-forgotten"
"""An alarm closed or deleted through some process's API: every alarm engine forgets it (the leader's matters)."""
_SHARED_KINDS: Final = frozenset({LiveKind.ALARM, LiveKind.ROLLOUT, LiveKind.GATEWAY_DELETED})
"""Live updates made by one process only (the rest come from the committed batches every process sees)."""
_MAX_LIVE_BYTES: Final = 256 * 1024
_FRAME_HEADER: Final = struct.calcsize("!BI")
"""encode_frame's kind and length before the body (decode_batch_frame reads the body)."""
_MESSAGE_OVERHEAD: Final = 15
_NO_CHANGES: Final = WriteResult(
    samples_written=0, samples_duplicate=0, events_written=0, events_duplicate=0, snapshots_rejected=0
)


def committed_frames(messages: Sequence[CommittedMessage], result: WriteResult, chunk_bytes: int) -> list[bytes]:
    """A committed batch as frame bodies of at most about `chunk_bytes` each (the write result in the first)."""
    frames: list[bytes] = []
    chunk: list[CommittedMessage] = []
    size = 0
    for message in messages:
        length = len(message[0]) + len(message[1]) + _MESSAGE_OVERHEAD
        if chunk and size + length > chunk_bytes:
            frames.append(encode_frame(chunk, _NO_CHANGES if frames else result)[_FRAME_HEADER:])
            chunk, size = [], 0
        chunk.append(message)
        size += length
    if chunk or not frames:
        frames.append(encode_frame(chunk, _NO_CHANGES if frames else result)[_FRAME_HEADER:])
    return frames


class SharedLiveFeed(LiveFeed):
    """A process's live feed whose one-process updates (:data:`_SHARED_KINDS`) go to every process's feed."""

    def __init__(self) -> None:
        super().__init__()
        self.share: Callable[[LiveUpdate], None] | None = None
        """Set by :class:`CommittedBroadcast`; None: delivered here only."""

    def publish(self, update: LiveUpdate) -> None:
        """Deliver `update` here, or, if it is one only this process makes, to every process (this one too)."""
        if self.share is not None and update.kind in _SHARED_KINDS:
            self.share(update)
        else:
            super().publish(update)

    def deliver(self, update: LiveUpdate) -> None:
        """Deliver a shared update that arrived (here only)."""
        super().publish(update)


def parse_live_update(body: bytes) -> LiveUpdate:
    """A shared live update from its JSON.

    Raises:
        ValueError: not one (bad JSON, a wrong type or kind, too big).
    """
    if len(body) > _MAX_LIVE_BYTES:
        raise ValueError("too big")
    raw = json.loads(body)
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict) or not isinstance(raw.get("gateway"), str):
        raise ValueError("not a live update object")
    at = raw.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise ValueError("at: not a finite number")
    kind = LiveKind(str(raw.get("kind")))
    if kind not in _SHARED_KINDS:
        raise ValueError(f"kind {kind.value}: not a shared one")
    return LiveUpdate(kind=kind, gateway=raw["gateway"], at=float(at), data=raw["data"])


class CommittedBroadcast:
    """Publishes this process's committed batches and receives every process's; ``await run()`` until cancelled."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        feed: LiveFeed | None = None,
        observers: Sequence[BatchObserver] = (),
        subject: str = COMMITTED_SUBJECT,
        queue_limit: int = 1000,
        chunk_bytes: int = 256 * 1024,
        user: str | None = None,
        password: str | None = None,
        forgotten: Callable[[int], None] | None = None,
    ) -> None:
        """Nothing connects before :meth:`run`.

        Args:
            servers: the NATS cluster's client URLs.
            feed: this process's live feed (a :class:`SharedLiveFeed` also shares its one-process updates).
            observers: told every committed batch (the alarm engine, behind :class:`~.leadership.LeaderOnly`).
            subject: the committed batches' subject.
            queue_limit: outgoing frames that may wait; beyond, the oldest is dropped and counted.
            chunk_bytes: the size a batch is split at.
            user: NATS user.
            password: NATS password.
            forgotten: told each alarm id any process's API closed or deleted (the alarm engine's ``forget``).
        """
        self.forgotten = forgotten
        self.servers = list(servers)
        self.feed = feed
        self.observers = list(observers)
        self.subject = subject
        self.chunk_bytes = chunk_bytes
        self._user, self._password = user, password
        self._outgoing: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=queue_limit)
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        """Set while subscribed."""
        self.sent = 0
        self.received = 0
        self.dropped = 0
        """Outgoing frames lost (the queue overflowed, or NATS refused them)."""
        self.damaged = 0
        """Incoming frames that did not decode (not ours, or a bug)."""
        if isinstance(feed, SharedLiveFeed):
            feed.share = self._share

    def forget_alarm(self, alarm_id: int) -> None:
        """Tell every process's alarm engine (this one's too) that the API closed or deleted `alarm_id`."""
        self._queue(FORGET_SUBJECT, str(alarm_id).encode())
        self._wake.set()

    def _share(self, update: LiveUpdate) -> None:
        self._queue(LIVE_SUBJECT, json.dumps(update.to_dict()).encode())
        self._wake.set()

    def _queue(self, subject: str, frame: bytes) -> None:
        if len(self._outgoing) == self._outgoing.maxlen:
            self.dropped += 1
        self._outgoing.append((subject, frame))

    def committed(self, messages: list[CommittedMessage], result: WriteResult) -> None:
        """Queue a committed batch for every process (ingest's ``committed`` callback; never waits)."""
        for frame in committed_frames(messages, result, self.chunk_bytes):
            self._queue(self.subject, frame)
        self._wake.set()

    async def run(self) -> None:
        """Connect (retrying), subscribe, and send until cancelled."""
        retry = Backoff(0.5, 10.0)
        while True:
            try:
                connection = await nats.connect(
                    servers=self.servers,
                    user=self._user,
                    password=self._password,
                    connect_timeout=5,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=_log_error,
                )
            except (nats.errors.Error, OSError) as exc:
                _log.warning("cluster feed: cannot connect to %s: %s", ",".join(self.servers), exc)
                await asyncio.sleep(retry.next_delay())
                continue
            retry.reset()
            try:
                await self._serve(connection)
            finally:
                self.connected.clear()
                with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
                    await connection.close()

    async def _serve(self, connection: Any) -> None:
        async def received(message: Any) -> None:
            self._hand_on(message.data)

        async def shared(message: Any) -> None:
            self._hand_on_shared(message.data)

        await connection.subscribe(self.subject, cb=received, pending_bytes_limit=64 * 1024 * 1024)

        async def forgotten(message: Any) -> None:
            self._hand_on_forgotten(message.data)

        await connection.subscribe(LIVE_SUBJECT, cb=shared)
        await connection.subscribe(FORGET_SUBJECT, cb=forgotten)
        await connection.flush(timeout=5)
        self.connected.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outgoing:
                subject, frame = self._outgoing.popleft()
                try:
                    await connection.publish(subject, frame)
                    self.sent += 1
                except (nats.errors.Error, OSError) as exc:
                    self.dropped += 1
                    _log.debug("cluster feed: a frame not published: %s", exc)

    def _hand_on(self, body: bytes) -> None:
        self.received += 1
        if (self.feed is None or not self.feed.subscriber_count) and not any(
            getattr(observer, "active", True) for observer in self.observers
        ):
            return  # a follower nobody watches: decoding it would be for nothing
        try:
            messages, result = decode_batch_frame(body)
            decoded = [(decode_incoming(topic, payload), retained, at) for topic, payload, retained, at in messages]
        except (WorkerError, FleetMessageError) as exc:
            self.damaged += 1
            _log.warning("cluster feed: a damaged frame on %s: %s", self.subject, exc)
            return
        batch = batch_of_messages(decoded)
        publish_batch(self.feed, batch)
        notify_observers(self.observers, batch, result)

    def _hand_on_forgotten(self, body: bytes) -> None:
        self.received += 1
        if not (0 < len(body) <= 19 and body.isdigit()):
            self.damaged += 1
            _log.warning("cluster feed: not an alarm id on %s: %r", FORGET_SUBJECT, body[:40])
            return
        if self.forgotten is not None:
            self.forgotten(int(body))

    def _hand_on_shared(self, body: bytes) -> None:
        self.received += 1
        try:
            update = parse_live_update(body)
        except ValueError as exc:  # json's errors and LiveKind's are ValueErrors
            self.damaged += 1
            _log.warning("cluster feed: a damaged update on %s: %s", LIVE_SUBJECT, exc)
            return
        if isinstance(self.feed, SharedLiveFeed):
            self.feed.deliver(update)
        elif self.feed is not None:
            self.feed.publish(update)


async def _log_error(exc: Exception) -> None:
    _log.warning("cluster feed: nats: %s", exc)

"""Ingest in several processes (``fleet serve --ingest-workers N``), with the live feed and alarms in this one.

One Python process decodes and stores at most a few thousand messages a second (see
``docs/fleet/storage-and-alarms.md``); with more cores, N worker processes share the load. Each worker is a
plain :class:`~.consumer.Ingest` with its own client id and persistent session (``bmsgate-fleet-ingest-<i>``)
on the shared subscriptions ``$share/ingest/fleet/v1/+/telemetry`` and ``.../event`` (the broker gives each
message to one of them); worker 0 alone also reads availability and state, which are retained and so
cannot be shared. All of them write to the one store (SQLite serialises their transactions; each batch is
one).

In cluster mode (``broker`` a :class:`~bmsgate.fleet.server.nats_ingest.JetStreamSource`) every worker
binds to the one shared JetStream consumer instead, which hands each message (availability and state
included) to one of them; a message a dead worker had not acknowledged goes to another after the
consumer's ``ack_wait``.

A worker acknowledges a message only after its batch committed, as ever, so a worker that dies loses
nothing: the broker keeps what it had not acknowledged in that worker's session, and :class:`IngestWorkers`
starts it again with the same client id, which gets it back (the store is idempotent).

The server process keeps the live feed and the alarm engine: each worker writes every committed batch to its
standard output (the messages as received, length-prefixed, see :func:`encode_frame`), and this process
decodes them again and hands them to the live feed and the batch observers, exactly as an in-process ingest
does. That hand-over is best effort like the alarm engine's own queue: a server process that falls far
behind loses (and counts) live updates, never stored data. Every second a worker also reports its counters,
which :attr:`IngestWorkers.counters` adds up.

A worker started here reads its settings (pickled) from standard input and stops when its standard input
closes (the server went away) or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from bmsgate.errors import BmsgateError
from bmsgate.fleet.protocol import FleetMessageError
from bmsgate.fleet.server.children import read_settings, send_settings, stop_child
from bmsgate.fleet.server.ingest.consumer import (
    BatchObserver,
    CommittedMessage,
    Ingest,
    IngestCounters,
    IngestSettings,
    batch_of_messages,
    decode_incoming,
    notify_observers,
    publish_batch,
    tune_gc_for_ingest,
)
from bmsgate.fleet.server.ingest.sources import IngestSource
from bmsgate.fleet.server.live import LiveFeed
from bmsgate.fleet.server.store import open_store
from bmsgate.fleet.server.store.repository import WriteResult
from bmsgate.fleet.server.store.settings import StoreSettings
from bmsgate.mqtt.settings import BrokerSettings
from bmsgate.runtime.backoff import Backoff

__all__ = ["IngestWorkers", "WorkerConfig", "decode_batch_frame", "encode_frame"]

_log = logging.getLogger(__name__)

SHARE_GROUP: Final = "ingest"
_FRAME: Final = struct.Struct("!BI")
"""A frame: kind, body length."""
_BATCH: Final = struct.Struct("!I5Q")
"""A batch body starts with: message count, then the write result's five counts."""
_MESSAGE: Final = struct.Struct("!dBHI")
"""Each message: received_at, retained, topic length, payload length; then topic and payload."""
_KIND_BATCH: Final = 1
_KIND_COUNTERS: Final = 2
_MAX_FRAME: Final = 512 * 1024 * 1024
_COUNTERS_EVERY_S: Final = 1.0
_STOP_GRACE_S: Final = 10.0
_OUTPUT_LIMIT: Final = 64 * 1024 * 1024
"""Bytes a worker lets wait for the server process before it drops (and counts) a batch's hand-over."""
_RESULT_FIELDS: Final = (
    "samples_written",
    "samples_duplicate",
    "events_written",
    "events_duplicate",
    "snapshots_rejected",
)


class WorkerError(BmsgateError):
    """An ingest worker's output could not be read (a bug or a damaged pipe)."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What one worker process is told (pickled to its standard input)."""

    index: int
    store: StoreSettings
    broker: BrokerSettings | IngestSource
    """The MQTT broker, or another source (cluster mode: the shared JetStream consumer)."""
    ingest: IngestSettings


# -- frames -------------------------------------------------------------------------------------------------


def encode_frame(messages: Sequence[CommittedMessage], result: WriteResult) -> bytes:
    """One committed batch as a frame."""
    parts = [_BATCH.pack(len(messages), *(getattr(result, name) for name in _RESULT_FIELDS))]
    for topic_name, payload, retained, received_at in messages:
        encoded = topic_name.encode()
        parts += (_MESSAGE.pack(received_at, retained, len(encoded), len(payload)), encoded, payload)
    body = b"".join(parts)
    return _FRAME.pack(_KIND_BATCH, len(body)) + body


def _counters_frame(counters: IngestCounters, connected: bool) -> bytes:
    body = json.dumps({"counters": counters.to_dict(), "connected": connected}).encode()
    return _FRAME.pack(_KIND_COUNTERS, len(body)) + body


def decode_batch_frame(body: bytes) -> tuple[list[CommittedMessage], WriteResult]:
    """The messages and write result of a batch frame's body.

    Raises:
        WorkerError: the body is damaged.
    """
    try:
        count, *numbers = _BATCH.unpack_from(body)
        position = _BATCH.size
        messages: list[CommittedMessage] = []
        for _ in range(count):
            received_at, retained, topic_length, payload_length = _MESSAGE.unpack_from(body, position)
            position += _MESSAGE.size
            end = position + topic_length + payload_length
            if end > len(body):
                raise WorkerError("a batch frame ends inside a message")
            topic_name = body[position : position + topic_length].decode()
            payload = body[position + topic_length : end]
            position = end
            messages.append((topic_name, payload, bool(retained), received_at))
    except (struct.error, UnicodeDecodeError) as exc:
        raise WorkerError(f"a damaged batch frame: {exc}") from exc
    if position != len(body):
        raise WorkerError("a batch frame with bytes after its messages")
    return messages, WriteResult(**dict(zip(_RESULT_FIELDS, numbers, strict=True)))


# -- the server side ----------------------------------------------------------------------------------------


class IngestWorkers:
    """N ingest worker processes, kept running; their committed batches feed this process's live feed.

    ``await run()`` until cancelled (then the workers are stopped: SIGTERM, and each finishes its batch).
    The store must exist and be migrated already (the server opens it first): the workers only open it.
    It offers what the server and its tests use of an :class:`~.consumer.Ingest`: :attr:`counters` (the
    sum of the workers' last reports) and :attr:`connected` (set once every worker is subscribed).
    """

    def __init__(
        self,
        store: StoreSettings,
        broker: BrokerSettings | IngestSource,
        *,
        workers: int,
        feed: LiveFeed | None = None,
        settings: IngestSettings | None = None,
        observers: Sequence[BatchObserver] = (),
    ) -> None:
        if workers < 1:
            raise ValueError("at least one ingest worker")
        self.store = store
        self.broker = broker
        self.workers = workers
        self.feed = feed
        self.settings = settings or IngestSettings()
        self.observers = list(observers)
        self.counters = IngestCounters()
        self.connected = asyncio.Event()
        """Set while every worker reports being subscribed."""
        self.restarts = 0
        """Workers started again after they stopped."""
        self.handover_failures = 0
        """Forwarded messages this process could not decode again (a bug; logged)."""
        self._publish_failures = 0
        self.reports: dict[int, dict[str, Any]] = {}
        """Each worker's last reported counters (:meth:`IngestCounters.to_dict`), by index."""
        self._connected: dict[int, bool] = {}
        self.pids: dict[int, int] = {}
        """The running workers' process ids, by index (tests stop one to see nothing is lost)."""

    def config(self, index: int) -> WorkerConfig:
        """What worker `index` is told."""
        ingest = dataclasses.replace(
            self.settings,
            client_id=f"{self.settings.client_id}-{index}",
            share_group=self.settings.share_group or SHARE_GROUP,
            retained_channels=index == 0,
        )
        return WorkerConfig(index=index, store=self.store, broker=self.broker, ingest=ingest)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(self.workers):
                group.create_task(self._keep_running(index), name=f"ingest-worker-{index}")

    async def _keep_running(self, index: int) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            started = time.monotonic()
            outcome: object
            try:
                outcome = f"exit status {await self._run_once(index)}"
            except (WorkerError, ValueError, OSError) as exc:
                # A damaged frame or a worker that cannot be started: this worker again, not the server down.
                outcome = exc
            finally:
                self._connected[index] = False
                self.pids.pop(index, None)
                self._update_connected()
            _log.warning("ingest worker %d stopped (%s); starting it again", index, outcome)
            self.restarts += 1
            if time.monotonic() - started > 60:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _run_once(self, index: int) -> int | None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bmsgate.fleet.server.ingest",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own session: Ctrl-C reaches the server, which stops the workers in order.
            start_new_session=True,
            limit=_MAX_FRAME,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        self.pids[index] = process.pid
        try:
            await send_settings(process, self.config(index))
            await self._read(index, process.stdout)
            return await process.wait()
        finally:
            await stop_child(process, _STOP_GRACE_S)

    async def _read(self, index: int, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                header = await stdout.readexactly(_FRAME.size)
                kind, length = _FRAME.unpack(header)
                if length > _MAX_FRAME:
                    raise WorkerError(f"a frame of {length} bytes")
                body = await stdout.readexactly(length)
            except asyncio.IncompleteReadError:
                return  # the worker ended
            if kind == _KIND_BATCH:
                self._hand_on(*decode_batch_frame(body))
            elif kind == _KIND_COUNTERS:
                report = json.loads(body)
                self.reports[index] = report["counters"]
                self._connected[index] = bool(report["connected"])
                self._sum_counters()
                self._update_connected()

    def _hand_on(self, messages: list[CommittedMessage], result: WriteResult) -> None:
        if (self.feed is None or not self.feed.subscriber_count) and not self.observers:
            return  # nobody to tell
        decoded = []
        for topic_name, payload, retained, received_at in messages:
            try:
                decoded.append((decode_incoming(topic_name, payload), retained, received_at))
            except FleetMessageError:
                self.handover_failures += 1  # the worker stored it, so it decoded there: a bug
                _log.exception("ingest: a stored message no longer decodes")
        batch = batch_of_messages(decoded)
        if not publish_batch(self.feed, batch):
            self._publish_failures += 1
            self.counters.publish_failures += 1
        notify_observers(self.observers, batch, result)

    def _update_connected(self) -> None:
        if len(self._connected) == self.workers and all(self._connected.values()):
            self.connected.set()
        else:
            self.connected.clear()

    def _sum_counters(self) -> None:
        total = IngestCounters()
        for report in self.reports.values():
            for name in (
                "received",
                "samples_written",
                "samples_duplicate",
                "events_duplicate",
                "batches",
                "store_failures",
                "backpressure_waits",
                "connects",
                "queued",
            ):
                setattr(total, name, getattr(total, name) + int(report.get(name, 0)))
            total.publish_failures += int(report.get("publish_failures", 0))
            total.stored.update(report.get("stored", {}))
            total.rejected.update(report.get("rejected", {}))
        total.publish_failures += self._publish_failures
        total.latencies = self.counters.latencies
        self.counters = total


# -- the worker side ----------------------------------------------------------------------------------------


async def _worker() -> None:
    loop = asyncio.get_running_loop()
    told, reader = await read_settings()
    config: WorkerConfig = told
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    dropped = 0

    def hand_over(messages: list[CommittedMessage], result: WriteResult) -> None:
        nonlocal dropped
        if transport.get_write_buffer_size() > _OUTPUT_LIMIT:
            dropped += len(messages)  # the server process is far behind: its live feed misses these
            return
        transport.write(encode_frame(messages, result))

    store = await open_store(config.store)
    try:
        ingest = Ingest(store, config.broker, settings=config.ingest, committed=hand_over)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        async def until_parent_leaves() -> None:
            await reader.read()  # EOF: the server went away
            stop.set()

        async def report() -> None:
            while True:
                ingest.counters.publish_failures = dropped
                transport.write(_counters_frame(ingest.counters, ingest.connected.is_set()))
                await asyncio.sleep(_COUNTERS_EVERY_S)

        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(ingest.run()),
                group.create_task(until_parent_leaves()),
                group.create_task(report()),
            ]
            await stop.wait()
            for task in tasks:
                task.cancel()
    finally:
        await store.close()
        transport.close()


def main() -> None:
    """Run one worker (``python -m bmsgate.fleet.server.ingest``, started by :class:`IngestWorkers`)."""
    logging.basicConfig(level=logging.WARNING, format="ingest worker %(process)d: %(levelname)s %(message)s")
    tune_gc_for_ingest()
    asyncio.run(_worker())

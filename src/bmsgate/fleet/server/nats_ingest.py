"""The NATS adapter of cluster-mode ingest: the only module that imports ``nats`` (nats-py).

In cluster mode the gateways publish over MQTT to NATS's MQTT endpoint, and the ingest workers read with
native JetStream: one durable pull consumer (:attr:`JetStreamSource.durable`, replicated on
:attr:`JetStreamSource.replicas` nodes) shared by every worker, each ``fetch`` handing a batch to one of
them, so a worker that dies leaves its unacknowledged messages to the others (redelivered after
:attr:`JetStreamSource.ack_wait_s`).

Why the consumer reads NATS's own ``$MQTT_msgs`` stream, not a stream of our own over
``fleet.v1.*.telemetry``: measured (experiments, see ``docs/fleet-scale.md`` "Cluster mode"), NATS sends the MQTT
PUBACK for a QoS 1 message once it has stored it in ``$MQTT_msgs`` (R3, written through JetStream with an
acknowledgement; a publish it cannot store there closes the gateway's connection instead of being
acknowledged), while a stream of our own on the plain subjects is fed without any acknowledgement: with
its leader killed, 85 of 300 PUBACKed messages never reached it. ``$MQTT_msgs`` keeps a message as long
as a consumer is interested (interest retention), so our durable consumer keeps everything the gateways
were told was received until a worker acknowledges it after its batch committed. Everything in
``$MQTT_msgs`` (availability, state, telemetry, events and the last wills the broker publishes) arrives with
the subject ``$MQTT.msgs.<the MQTT topic with / as .>``; the retain flag is not carried, and none is needed:
the stream saw each message live.

The durable consumer must exist before the gateways publish what it should keep (interest retention
stores nothing nobody is interested in): it is created on the first connect and then outlives every worker.
It needs nats-server 2.10 or newer (several filter subjects on one consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bmsgate.errors import SinkError
from bmsgate.fleet.protocol import TOPIC_ROOT, Channel
from bmsgate.fleet.server.ingest.settings import IngestSettings
from bmsgate.mqtt.client import IncomingMessage

__all__ = ["MQTT_STREAM", "JetStreamSession", "JetStreamSource", "subject_topic"]

_log = logging.getLogger(__name__)

SINK_NAME: Final = "nats"
MQTT_STREAM: Final = "$MQTT_msgs"
"""NATS's stream of every QoS 1 message published over MQTT."""
_MQTT_SUBJECT_PREFIX: Final = "$MQTT.msgs."
_CHANNELS: Final = (Channel.AVAILABILITY, Channel.STATE, Channel.TELEMETRY, Channel.EVENT)
_BROKEN_PAUSE_S: Final = 0.5
"""After a failed fetch (a node went away; the client reconnects by itself) before the next one."""
_BROKEN_LIMIT: Final = 60
"""Failed fetches in a row (~30 s) after which the session ends and ingest opens a new one (which also
creates the consumer again, should it be gone)."""


def subject_topic(subject: str) -> str:
    """The MQTT topic of a ``$MQTT_msgs`` subject (NATS writes ``/`` as ``.`` and a ``.`` as ``//``)."""
    name = subject.removeprefix(_MQTT_SUBJECT_PREFIX)
    return "/".join(token.replace("//", ".") for token in name.split("."))


def _filter_subjects() -> list[str]:
    root = TOPIC_ROOT.replace("/", ".")
    return [f"{_MQTT_SUBJECT_PREFIX}{root}.*.{channel.value}" for channel in _CHANNELS]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JetStreamSource:
    """Where and how ingest reads in cluster mode (picklable: worker processes are told it)."""

    servers: tuple[str, ...]
    """NATS client URLs of the cluster's nodes (``nats://host:4222``); the client fails over among them."""
    durable: str = "bmsgate-ingest"
    """The shared durable consumer's name (every ingest worker of one fleet uses the same)."""
    replicas: int = 3
    """Replicas of the consumer's state (3: it survives losing one node of three)."""
    fetch_batch: int = 1000
    """Messages asked for per fetch (at most)."""
    fetch_wait_s: float = 1.0
    """How long one fetch waits for messages before it asks again."""
    ack_wait_s: float = 30.0
    """A message delivered and not acknowledged this long goes to a worker again (one that died, or a
    database outage longer than this: the store is idempotent, a second copy is stored once)."""
    max_ack_pending: int = 100_000
    """Messages delivered and not yet acknowledged, over all workers; the consumer pauses beyond it."""
    connect_timeout_s: float = 5.0
    user: str | None = None
    password: str | None = None
    reconnect_initial: float = 0.5
    """Seconds before a new session after one ended (growing to :attr:`reconnect_max`)."""
    reconnect_max: float = 10.0

    def display_url(self) -> str:
        """The servers, for logs."""
        return ",".join(self.servers)

    def consumer_config(self) -> ConsumerConfig:
        """The durable consumer every worker shares."""
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            filter_subjects=_filter_subjects(),
            num_replicas=self.replicas,
        )

    @contextlib.asynccontextmanager
    async def open(self, settings: IngestSettings) -> AsyncIterator[JetStreamSession]:
        """Connect, make sure the durable consumer exists, and bind to it.

        Raises:
            SinkError: no node answered, or ``$MQTT_msgs`` does not exist yet (no MQTT client has
                connected to the cluster) or the consumer cannot be created.
        """
        del settings  # one shared consumer: no per-worker client id or subscriptions
        try:
            connection = await nats.connect(
                servers=list(self.servers),
                user=self.user,
                password=self.password,
                connect_timeout=self.connect_timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_log_error,
                disconnected_cb=_log_disconnected,
                reconnected_cb=_log_reconnected,
            )
        except (nats.errors.Error, OSError) as exc:
            raise SinkError(f"connect to {self.display_url()}: {exc}", sink=SINK_NAME) from exc
        session: JetStreamSession | None = None
        try:
            jetstream = connection.jetstream()
            try:
                await jetstream.add_consumer(MQTT_STREAM, self.consumer_config())
                subscription = await jetstream.pull_subscribe_bind(self.durable, MQTT_STREAM)
            except nats.js.errors.NotFoundError as exc:
                raise SinkError(
                    f"no stream {MQTT_STREAM} yet (NATS makes it when the first MQTT client connects): {exc}",
                    sink=SINK_NAME,
                ) from exc
            except (nats.errors.Error, OSError) as exc:
                raise SinkError(f"the durable consumer {self.durable}: {exc}", sink=SINK_NAME) from exc
            session = JetStreamSession(connection, subscription, self)
            yield session
        finally:
            if session is not None:
                await session.finish_acks()
            with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
                await connection.close()


class JetStreamSession:
    """One worker's binding to the shared consumer: batches in, acknowledgements out."""

    def __init__(self, connection: Any, subscription: Any, source: JetStreamSource) -> None:
        self._connection = connection
        self._subscription = subscription
        self._source = source
        self._pending: dict[int, Any] = {}
        """Delivered, not yet acknowledged messages by our own delivery number (the ``mid`` we hand out)."""
        self._deliveries = 0
        self._acks: set[asyncio.Task[None]] = set()
        self.redelivered = 0
        """Messages received that JetStream had delivered before (to a worker that died, or too slow)."""

    async def message_batches(self) -> AsyncIterator[list[IncomingMessage]]:
        """Batches as fetched (never empty).

        Raises:
            SinkError: the connection is closed for good.
        """
        source = self._source
        failures = 0
        while True:
            try:
                fetched = await self._subscription.fetch(source.fetch_batch, timeout=source.fetch_wait_s)
            except TimeoutError:
                failures = 0
                continue  # nothing new
            except (nats.errors.Error, OSError) as exc:
                failures += 1
                if self._connection.is_closed or failures >= _BROKEN_LIMIT:
                    raise SinkError(
                        f"fetching from {source.durable} failed {failures} times: {exc}", sink=SINK_NAME
                    ) from exc
                _log.debug("ingest: fetch failed (%s); again", exc)
                await asyncio.sleep(_BROKEN_PAUSE_S)
                continue
            failures = 0
            batch = []
            for message in fetched:
                self._deliveries += 1
                self._pending[self._deliveries] = message
                metadata = message.metadata
                if metadata.num_delivered and metadata.num_delivered > 1:
                    self.redelivered += 1
                batch.append(IncomingMessage(subject_topic(message.subject), message.data, False, 1, self._deliveries))
            if batch:
                yield batch

    def ack_many(self, messages: Sequence[IncomingMessage]) -> None:
        """Acknowledge messages of this session (each one: the consumer is shared, so no "ack all")."""
        delivered = [found for message in messages if (found := self._pending.pop(message.mid, None)) is not None]
        if delivered:
            task = asyncio.get_running_loop().create_task(self._ack(delivered))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _ack(self, delivered: list[Any]) -> None:
        try:
            for message in delivered:
                await message.ack()
        except (nats.errors.Error, OSError) as exc:
            # Not acknowledged: JetStream delivers these again after ack_wait; stored once.
            _log.warning("ingest: acknowledging %d messages failed (%s); they will come again", len(delivered), exc)

    async def finish_acks(self) -> None:
        """Wait for the acknowledgements sent so far and flush them (before closing)."""
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)
        with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
            await self._connection.flush(timeout=2)


async def _log_error(exc: Exception) -> None:
    _log.warning("nats: %s", exc)


async def _log_disconnected() -> None:
    _log.warning("nats: disconnected; reconnecting")


async def _log_reconnected() -> None:
    _log.info("nats: reconnected")

"""Where ingest reads from: an :class:`IngestSource` opens :class:`IngestSession` s (MQTT or JetStream).

:class:`MqttSource` is the broker over MQTT (a persistent session, manual acknowledgement, the filters of
:func:`ingest_filters`); cluster mode reads a JetStream consumer instead
(:class:`bmsgate.fleet.server.nats_ingest.JetStreamSource`, in its own module: the only one importing nats).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from bmsgate.fleet.protocol import Channel, gateway_filter
from bmsgate.fleet.server.ingest.settings import IngestSettings
from bmsgate.mqtt.client import IncomingMessage, MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings

__all__ = ["IngestSession", "IngestSource", "MqttSource", "ingest_filters"]


class IngestSession(Protocol):
    """One connected session of a source: batches of messages in, acknowledgements out."""

    def message_batches(self) -> AsyncIterator[list[IncomingMessage]]:
        """Received messages in batches (never empty); raises :class:`SinkError` when the session ends."""
        ...

    def ack_many(self, messages: Sequence[IncomingMessage]) -> None:
        """Acknowledge messages of this session (the source delivers unacknowledged ones again)."""
        ...


class IngestSource(Protocol):
    """Where ingest reads from: opens one session at a time; ingest opens a new one after one ended."""

    @property
    def reconnect_initial(self) -> float:
        """Seconds before the first reconnect attempt."""
        ...

    @property
    def reconnect_max(self) -> float:
        """The longest pause between reconnect attempts."""
        ...

    def display_url(self) -> str:
        """Where, for logs (no password)."""
        ...

    def open(self, settings: IngestSettings) -> AbstractAsyncContextManager[IngestSession]:
        """Connect and subscribe.

        Raises:
            SinkError: it failed (ingest tries again after a backoff).
        """
        ...


def ingest_filters(settings: IngestSettings) -> list[str]:
    """The MQTT subscription filters of an ingest consumer."""
    share = f"$share/{settings.share_group}/" if settings.share_group else ""
    retained = [gateway_filter(Channel.AVAILABILITY), gateway_filter(Channel.STATE)]
    return [
        *(retained if settings.retained_channels else []),
        share + gateway_filter(Channel.TELEMETRY),
        share + gateway_filter(Channel.EVENT),
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class MqttSource:
    """The broker over MQTT: a persistent session with manual acknowledgement on :func:`ingest_filters`."""

    broker: BrokerSettings

    @property
    def reconnect_initial(self) -> float:
        """See :class:`IngestSource`."""
        return self.broker.reconnect_initial

    @property
    def reconnect_max(self) -> float:
        """See :class:`IngestSource`."""
        return self.broker.reconnect_max

    def display_url(self) -> str:
        """See :class:`IngestSource`."""
        return self.broker.display_url()

    @contextlib.asynccontextmanager
    async def open(self, settings: IngestSettings) -> AsyncIterator[MqttSession]:
        """See :class:`IngestSource`."""
        async with connect(
            self.broker,
            will_topic=f"fleet/server/ingest/{settings.client_id}",
            will_payload="offline",
            client_id=settings.client_id,
            clean_session=False,
            manual_ack=True,
            buffered_reads=True,
        ) as session:
            await session.subscribe(*ingest_filters(settings))
            yield session

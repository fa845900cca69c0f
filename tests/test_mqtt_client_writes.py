"""The MQTT adapter's writes: a publish on the event loop is on the wire before paho's publish returns; what
the socket does not take at once (a large message) still arrives whole, through aiomqtt's writer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from bmsgate.mqtt.broker import EmbeddedBroker, free_port
from bmsgate.mqtt.client import IncomingMessage, MqttSession, connect
from bmsgate.mqtt.settings import BrokerSettings


async def _next(messages: AsyncIterator[IncomingMessage]) -> IncomingMessage:
    async with asyncio.timeout(15):
        return await anext(messages)


@contextlib.asynccontextmanager
async def _publisher_and_subscriber() -> AsyncIterator[tuple[MqttSession, AsyncIterator[IncomingMessage]]]:
    """A publishing session and the messages on test/data/# of a second one, on a real local Mosquitto."""
    async with EmbeddedBroker(port=free_port(), prefer="mosquitto") as broker:
        settings = BrokerSettings(url=broker.url)
        async with (
            connect(settings, will_topic="test/sub/will", will_payload="gone", client_id="sub") as subscriber,
            connect(settings, will_topic="test/pub/will", will_payload="gone", client_id="pub") as publisher,
        ):
            await subscriber.subscribe("test/data/#")
            yield publisher, subscriber.messages()


async def test_a_publish_is_written_at_once_and_a_large_one_arrives_whole() -> None:
    async with _publisher_and_subscriber() as (publisher, messages):
        paho = _paho(publisher)
        # paho's own publish, without awaiting anything: written before it returns (aiomqtt's way
        # needed the event loop to run a writer callback first).
        small = paho.publish("test/data/small", b"x", qos=0)
        assert small.is_published()
        assert not paho.want_write()
        assert await _next(messages) == IncomingMessage("test/data/small", b"x", False, qos=0, mid=0)

        # A small send buffer: the socket takes only part of a large message at once, whatever the
        # kernel's loopback tuning would otherwise allow.
        paho.socket().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        large = bytes(range(256)) * 32_768  # 8 MiB
        info = paho.publish("test/data/large", large, qos=0)
        assert not info.is_published()  # the rest waits for the socket
        await publisher.publish("test/data/after", "after", retain=False)
        received = await _next(messages)
        assert (received.topic, received.payload == large) == ("test/data/large", True)
        assert (await _next(messages)).topic == "test/data/after"
        assert info.is_published()


def _paho(session: MqttSession) -> Any:
    return session._client._client


async def test_on_publish_runs_only_for_a_publish_that_is_waited_for() -> None:
    async with _publisher_and_subscriber() as (publisher, messages):
        paho = _paho(publisher)
        confirmed: list[int] = []
        aiomqtt_callback = paho.on_publish

        def counting(*arguments: Any) -> None:
            confirmed.append(arguments[2])
            aiomqtt_callback(*arguments)

        paho.on_publish = counting
        # Written at once, awaited by nobody: paho builds no PUBACK reason code and properties for it.
        await publisher.publish("test/data/small", "x", retain=False, qos=0)
        assert confirmed == []
        assert paho.on_publish is counting
        # While aiomqtt waits for any publish, every write runs the callback: the packet written may be that one.
        pending = publisher._client._pending_publishes
        pending[65_000] = asyncio.Event()
        try:
            info = paho.publish("test/data/while-waiting", b"y", qos=0)
            assert info.is_published() and confirmed == [info.mid]
        finally:
            del pending[65_000]
        confirmed.clear()
        # Not taken at once: aiomqtt waits for it, and the callback that ends the wait still comes.
        paho.socket().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        large = bytes(range(256)) * 32_768  # 8 MiB
        async with asyncio.timeout(30):
            await publisher.publish("test/data/large", large, retain=False, qos=0)
        assert len(confirmed) == 1
        assert (await _next(messages)).topic == "test/data/small"
        assert (await _next(messages)).topic == "test/data/while-waiting"
        received = await _next(messages)
        assert (received.topic, received.payload == large) == ("test/data/large", True)

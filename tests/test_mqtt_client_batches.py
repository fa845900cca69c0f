"""The MQTT adapter's batched reading: PUBLISH packets parsed from the read buffer in one pass, whole batches
acknowledged in one write, and the same messages, in the same order, as paho delivers them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.errors import SinkError
from bmsgate.mqtt.client import IncomingMessage, MqttSession, _BufferedSocket, connect
from bmsgate.mqtt.settings import BrokerSettings
from tests.mosquitto import MOSQUITTO, Mosquitto


def _length(value: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, value = value % 128, value // 128
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _publish(topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 7, retain: bool = False) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | qos << 1 | int(retain)]) + _length(len(body)) + body


def _taken(data: bytes) -> tuple[list[IncomingMessage], int, _BufferedSocket]:
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(False)
        left.sendall(data)
        wrapped = _BufferedSocket(right)
        if data:
            assert wrapped.fill()
        messages: list[IncomingMessage] = []
        count = wrapped.take_publishes(messages.append)
    return messages, count, wrapped


def test_complete_publishes_are_taken_and_the_rest_is_left_for_paho() -> None:
    big = b"x" * 300  # a two-byte remaining length
    data = (
        _publish(b"fleet/v1/a/telemetry", b"one", mid=1)
        + _publish(b"fleet/v1/b/state", big, qos=0, retain=True)
        + b"\x90\x03\x00\x02\x01"  # a SUBACK: paho's
        + _publish(b"fleet/v1/c/telemetry", b"after")
    )
    messages, count, wrapped = _taken(data)
    assert count == 2
    assert messages == [
        IncomingMessage("fleet/v1/a/telemetry", b"one", False, qos=1, mid=1),
        IncomingMessage("fleet/v1/b/state", big, True, qos=0, mid=0),
    ]
    assert wrapped.pending() == 5 + len(_publish(b"fleet/v1/c/telemetry", b"after"))


def test_an_incomplete_publish_waits_and_qos_2_goes_to_paho() -> None:
    whole = _publish(b"t", b"payload")
    assert _taken(whole[:-1])[1] == 0
    assert _taken(_publish(b"t", b"p", qos=2))[1] == 0


@pytest.mark.parametrize("packet", [b"\x30\x00", b"\x30\x01\x00", b"\x32\x01\x00", b"\x32\x03\x00\x05a"])
def test_a_publish_too_short_for_its_topic_is_left_to_paho(packet: bytes) -> None:
    # Found in review: these once raised IndexError inside paho's reader (a stalled session).
    messages, count, wrapped = _taken(_publish(b"t", b"ok") + packet)
    assert (count, [message.payload for message in messages]) == (1, [b"ok"])
    assert wrapped.pending() == len(packet)


def test_a_topic_that_is_not_utf8_becomes_one_no_parser_accepts() -> None:
    messages, count, _ = _taken(_publish(b"fleet/v1/\xff/telemetry", b"{}"))
    assert count == 1
    assert "\ufffd" in messages[0].topic


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=200)), max_size=3))
def test_any_bytes_are_taken_whole_or_left_never_an_error(noise: bytes, packets: list[tuple[bytes, bytes]]) -> None:
    data = b"".join(_publish(topic, payload) for topic, payload in packets) + noise
    messages, count, wrapped = _taken(data)
    assert count == len(messages)
    assert count >= len(packets)
    assert [message.payload for message in messages[: len(packets)]] == [payload for _, payload in packets]
    assert wrapped.pending() <= len(data)


# -- through a real broker -------------------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed: apt-get install mosquitto")
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    mosquitto = Mosquitto(directory, extra="allow_anonymous true\nmax_inflight_messages 0\n", persistence=True)
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


@contextlib.asynccontextmanager
async def _consumer(broker: Mosquitto, *, manual_ack: bool = True) -> AsyncIterator[MqttSession]:
    async with connect(
        BrokerSettings(url=broker.url),
        will_topic="test/consumer",
        will_payload="gone",
        client_id="test-consumer",
        clean_session=False,
        manual_ack=manual_ack,
        buffered_reads=True,
    ) as session:
        yield session


async def _collect(session: MqttSession, count: int) -> list[IncomingMessage]:
    received: list[IncomingMessage] = []
    async with asyncio.timeout(15):
        async for batch in session.message_batches():
            assert batch
            received += batch
            if len(received) >= count:
                return received
    raise AssertionError("the iteration ended")


async def test_batches_bring_every_message_in_order_large_ones_too(broker: Mosquitto) -> None:
    payloads = [f"message {index}".encode() * (1 if index % 50 else 10_000) for index in range(300)]
    async with (
        _consumer(broker) as consumer,
        connect(
            BrokerSettings(url=broker.url), will_topic="test/pub", will_payload="gone", client_id="test-pub"
        ) as publisher,
    ):
        await consumer.subscribe("test/#")
        for payload in payloads:
            await publisher.publish("test/load", payload, retain=False, qos=1)
        received = await _collect(consumer, len(payloads))
        assert [message.payload for message in received] == payloads  # > 64 KiB ones went through paho
        consumer.ack_many(received)


async def test_acknowledged_batches_are_not_sent_again_the_others_are(broker: Mosquitto) -> None:
    settings = BrokerSettings(url=broker.url)
    async with _consumer(broker) as consumer:
        await consumer.subscribe("test/#")
    async with connect(settings, will_topic="test/pub", will_payload="gone", client_id="test-pub") as publisher:
        for index in range(20):
            await publisher.publish("test/load", str(index).encode(), retain=False, qos=1)
    async with _consumer(broker) as consumer:
        received = await _collect(consumer, 20)
        consumer.ack_many(received[:10])
        await asyncio.sleep(0.3)  # the PUBACKs reach the broker
    async with _consumer(broker) as consumer:
        again = await _collect(consumer, 10)
        assert [message.payload for message in again] == [str(index).encode() for index in range(10, 20)]
        consumer.ack_many(again)


async def test_without_manual_acknowledgement_messages_are_acknowledged_on_receipt(broker: Mosquitto) -> None:
    settings = BrokerSettings(url=broker.url)
    async with _consumer(broker, manual_ack=False) as consumer:
        await consumer.subscribe("test/#")
        async with connect(settings, will_topic="test/pub", will_payload="gone", client_id="test-pub") as publisher:
            for index in range(20):
                await publisher.publish("test/load", str(index).encode(), retain=False, qos=1)
        await _collect(consumer, 20)
        await asyncio.sleep(0.3)
    async with _consumer(broker, manual_ack=False) as consumer:
        nothing = asyncio.wait_for(_collect(consumer, 1), 1.0)
        with pytest.raises(TimeoutError):
            await nothing


async def test_a_lost_connection_ends_the_batches_with_a_sink_error(broker: Mosquitto) -> None:
    async with _consumer(broker) as consumer:
        await consumer.subscribe("test/#")
        broker.stop()

        async def drain() -> None:
            async with asyncio.timeout(15):
                async for _ in consumer.message_batches():
                    pass

        with pytest.raises(SinkError):
            await drain()


def test_the_fast_paths_are_on_with_the_paho_we_test_against() -> None:
    from bmsgate.mqtt import client

    # A paho without the internals they use falls back to its own (slower) paths; this says so loudly.
    assert client._PAHO_INTERNALS_KNOWN

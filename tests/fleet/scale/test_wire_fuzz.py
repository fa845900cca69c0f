"""The simulator's MQTT reader: whatever a broker sends, no exception escapes and the buffer stays bounded."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from bmsgate.fleet.simulate.wire import ConnectOptions, RawGatewayConnection, publish_packet

_OPTIONS = ConnectOptions(client_id="sim-1", will_topic="fleet/v1/sim-1/availability", will_payload=b"offline")


def _feed(chunks: list[bytes]) -> RawGatewayConnection:
    async def run() -> RawGatewayConnection:
        connection = RawGatewayConnection(_OPTIONS, lambda _lost: None)
        connection.in_flight = 3
        for chunk in chunks:
            connection.data_received(chunk)
        if connection.connected.done():
            connection.connected.exception()  # retrieved: a refused CONNACK is an answer, not an error
        return connection

    return asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_broker_bytes_never_raise(chunks: list[bytes]) -> None:
    connection = _feed(chunks)
    assert 0 <= connection.in_flight <= 3
    assert connection.acked + connection.in_flight == 3


def test_acks_split_across_reads_are_counted() -> None:
    connection = _feed([b"\x20\x02\x00", b"\x00\x40", b"\x02\x00\x01\x40\x02\x00\x02"])
    assert connection.connected.done()
    assert connection.connected.exception() is None
    assert connection.acked == 2


def test_a_refused_connack_fails_the_connect_with_its_code() -> None:
    connection = _feed([b"\x20\x02\x00\x05"])
    error = connection.connected.exception()
    assert error is not None
    assert "CONNACK code 5" in str(error)


def test_a_publish_packet_has_the_qos1_header_and_length() -> None:
    packet = publish_packet(b"t", 7, b"x" * 200, retain=True)
    assert packet[0] == 0x33
    assert packet[1:3] == bytes([(205 % 128) | 0x80, 205 // 128])
    assert packet[-200:] == b"x" * 200


def test_a_flood_of_unread_bytes_is_dropped_not_kept() -> None:
    connection = _feed([b"\x30\xff\xff\xff\x7f" + b"x" * 70_000])
    assert len(connection._inbound) == 0

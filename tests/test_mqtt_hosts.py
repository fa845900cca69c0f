"""``BrokerSettings.hosts``: more addresses of one broker tier, tried in order when the first does not connect.

A reconnect starts after the node that last failed or dropped the session (:mod:`bmsgate.mqtt.rotation`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bmsgate.errors import SinkError
from bmsgate.mqtt.broker import free_port
from bmsgate.mqtt.client import MqttSession, connect
from bmsgate.mqtt.rotation import AddressRotation
from bmsgate.mqtt.settings import BrokerSettings
from tests.mosquitto import MOSQUITTO, Mosquitto


def _started(directory: Path) -> Mosquitto:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed: apt-get install mosquitto")
    directory.mkdir()
    broker = Mosquitto(directory, extra="allow_anonymous true\n")
    broker.start()
    return broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = _started(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def second_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = _started(tmp_path / "second")
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def _silent_listener() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A port that accepts TCP connections and never answers (a node that hangs: the connect times out).

    Yields the port and the accepted connections.
    """
    accepted: list[asyncio.StreamWriter] = []

    def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def _which_broker(session: MqttSession) -> str:
    """The retained ``test/whoami`` of the broker this session is on."""
    await session.subscribe("test/whoami")
    async with asyncio.timeout(5):
        async for message in session.messages():
            return message.payload.decode()
    raise AssertionError("no retained marker")


async def _mark(broker: Mosquitto, name: str) -> None:
    settings = BrokerSettings.model_validate({"url": broker.url})
    async with connect(settings, will_topic="test/will", will_payload="gone") as session:
        await session.publish("test/whoami", name.encode(), retain=True, qos=1)


def test_addresses_are_host_then_hosts_without_repeats() -> None:
    settings = BrokerSettings.model_validate(
        {"url": "mqtt://n1:1883", "hosts": ["n2:1884", "n3", "[::1]:1885", "n1:1883"]}
    )
    assert settings.addresses() == [("n1", 1883), ("n2", 1884), ("n3", 1883), ("::1", 1885)]
    assert BrokerSettings.model_validate({"host": "only"}).addresses() == [("only", 1883)]  # old configs: as before


@pytest.mark.parametrize("bad", ["n2:0", "n2:99999", "n2:x", "", "::1", "[::1", "user@n2:1", "n2 :1", ":1883"])
def test_a_bad_address_is_refused_naming_the_key(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BrokerSettings.model_validate({"host": "n1", "hosts": ["n2:1884", bad]})
    error = caught.value.errors()[0]
    assert error["loc"] == ("hosts",)
    assert "hosts[1]" in error["msg"]


@given(address=st.text(max_size=40))
def test_any_text_is_an_address_or_a_validation_error(address: str) -> None:
    try:
        settings = BrokerSettings.model_validate({"hosts": [address]})
    except ValidationError:
        return
    assert all(1 <= port <= 65535 and host for host, port in settings.addresses())


async def test_a_refused_first_address_falls_over_to_the_next(mosquitto: Mosquitto) -> None:
    dead = free_port()  # nothing listens there
    settings = BrokerSettings.model_validate(
        {"host": "127.0.0.1", "port": dead, "hosts": [f"127.0.0.1:{mosquitto.port}"], "client_id": "hosts-test"}
    )
    async with connect(settings, will_topic="test/will", will_payload="gone") as session:
        await session.publish("test/hosts", b"1", retain=False, qos=1)  # PUBACKed by the second address


async def test_no_address_connecting_is_one_clear_error() -> None:
    first, second = free_port(), free_port()
    settings = BrokerSettings.model_validate({"host": "127.0.0.1", "port": first, "hosts": [f"127.0.0.1:{second}"]})
    with pytest.raises(SinkError, match=f"127.0.0.1:{second}"):
        async with connect(settings, will_topic="test/will", will_payload="gone"):
            pass


def test_a_failed_or_dropping_address_moves_the_start_to_the_next() -> None:
    first, second, third = ("n1", 1883), ("n2", 1883), ("n3", 1883)
    rotation = AddressRotation((first, second, third))
    assert rotation.in_order() == [first, second, third]
    rotation.failed(first)
    assert rotation.in_order() == [second, third, first]
    rotation.connected(second)
    assert rotation.in_order() == [second, third, first]  # a working node stays first
    rotation.failed(first)  # a late report about a node already passed over changes nothing
    assert rotation.in_order() == [second, third, first]
    rotation.failed(second)
    rotation.failed(third)
    assert rotation.in_order() == [first, second, third]  # round again
    rotation.failed(("elsewhere", 1))
    assert rotation.in_order() == [first, second, third]
    with pytest.raises(ValueError, match="at least one address"):
        AddressRotation(())


@pytest.mark.slow  # one connect timeout (10 s): the cost each reconnect paid before
async def test_a_reconnect_does_not_wait_for_a_first_address_that_timed_out(mosquitto: Mosquitto) -> None:
    async with _silent_listener() as (bad_port, accepted):
        settings = BrokerSettings.model_validate(
            {"host": "127.0.0.1", "port": bad_port, "hosts": [f"127.0.0.1:{mosquitto.port}"], "client_id": "rot-1"}
        )
        async with connect(settings, will_topic="test/will", will_payload="gone") as session:
            await session.publish("test/hosts", b"1", retain=False, qos=1)  # after the timeout, on the second
        assert len(accepted) == 1
        for _ in range(2):
            async with asyncio.timeout(3):  # not another 10 s
                async with connect(settings, will_topic="test/will", will_payload="gone") as session:
                    await session.publish("test/hosts", b"1", retain=False, qos=1)
        assert len(accepted) == 1  # before the rotation each reconnect began with the hanging node again


async def test_after_a_node_drops_the_session_the_reconnect_starts_at_the_next(
    mosquitto: Mosquitto, second_mosquitto: Mosquitto
) -> None:
    await _mark(mosquitto, "first")
    await _mark(second_mosquitto, "second")
    settings = BrokerSettings.model_validate(
        {"url": mosquitto.url, "hosts": [f"127.0.0.1:{second_mosquitto.port}"], "client_id": "rot-2"}
    )

    async def until_the_node_goes() -> None:
        async with connect(settings, will_topic="test/will", will_payload="gone") as session:
            assert await _which_broker(session) == "first"
            mosquitto.stop()
            async with asyncio.timeout(10):
                async for _ in session.messages():  # until the broken session says so
                    pass

    with pytest.raises(SinkError):
        await until_the_node_goes()
    mosquitto.start()  # back, and it would take the session: the next one still goes to the other node
    await _mark(mosquitto, "first")
    async with connect(settings, will_topic="test/will", will_payload="gone") as session:
        assert await _which_broker(session) == "second"
    # A session on it that ends cleanly keeps it first.
    async with connect(settings, will_topic="test/will", will_payload="gone") as session:
        assert await _which_broker(session) == "second"

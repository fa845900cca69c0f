"""``BrokerSettings.hosts``: more addresses of one broker tier, tried in order when the first does not connect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bmsgate.errors import SinkError
from bmsgate.mqtt.broker import free_port
from bmsgate.mqtt.client import connect
from bmsgate.mqtt.settings import BrokerSettings
from tests.mosquitto import MOSQUITTO, Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed: apt-get install mosquitto")
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    broker = Mosquitto(directory, extra="allow_anonymous true\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


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

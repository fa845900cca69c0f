"""Engine 7 over the BLE transport: a profile's challenge–response and per-characteristic tags (Stark Varg).

The fake bike (`FakePeripheral` with a `secret`) hands out a fresh challenge on each read, answers the
response with its verdict, refuses subscriptions to its telemetry until it accepted one, and notifies each
block on its own characteristic without a type byte; the transport puts the tag in front.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bmsgate.errors import AuthenticationError, ConnectError
from bmsgate.protocols import CompiledProtocol, compile_definition, get_protocol
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.protocols.gattspec import ChallengeResponse
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.testing import FakeBluetooth, FakePeripheral, gatt_for_protocol
from bmsgate.transports.ble import BleTransport, ReconnectPolicy, gatt_tree
from bmsgate.transports.discovery import select_characteristics

from .helpers import make_transport

STARK = get_protocol("stark-varg")
ADDRESS = "AA:BB:CC:DD:EE:07"
VIN = "UDUVARG0000000042"
KEY = b"00112233445566778899aabbccddeeff"
OTHER_KEY = b"ffeeddccbbaa99887766554433221100"


def _authentication(protocol: CompiledProtocol) -> ChallengeResponse:
    spec = protocol.gatt_profiles[0].authenticate
    assert spec is not None
    return spec


AUTH = _authentication(STARK)
STREAMED = ClientOptions(request_timeout=1.0, retries=0, poll_deadline=4.0)


def _bike(*, secret: bytes | None) -> FakePeripheral:
    # Blocks up to 200 bytes go out in one notification: an MTU that carries them.
    return FakePeripheral(STARK, ADDRESS, name=VIN, mtu=247, pack=PackConfig(cells=20, ntc_count=3), secret=secret)


def _transport(radio: FakeBluetooth, protocol: CompiledProtocol, secret: bytes | None) -> BleTransport:
    return make_transport(
        radio,
        protocol,
        address=ADDRESS,
        reconnect=ReconnectPolicy(attempts=2, initial_delay=0.01, max_delay=0.01),
        secret=secret,
    )


async def test_the_right_key_opens_the_telemetry_and_each_block_is_keyed_by_its_characteristic() -> None:
    bike = _bike(secret=KEY)
    radio = FakeBluetooth([bike])
    async with BatteryClient(STARK, _transport(radio, STARK, KEY), options=STREAMED) as client:
        snapshot = await client.read()
        again = await client.read()
    assert bike.authenticated is False  # the connection is closed
    assert len(bike.challenges) == 1 and len(bike.responses) == 1  # once per connection, not per poll
    response = bike.responses[0]
    assert response[:2] == bytes.fromhex("0201") and len(response) == 34
    assert snapshot.cell_count == 20 and again.cell_count == 20
    assert snapshot.voltage is not None and snapshot.soc is not None and len(snapshot.temperatures) == 3


async def test_a_wrong_key_is_an_authentication_error_that_is_not_retried() -> None:
    bike = _bike(secret=KEY)
    radio = FakeBluetooth([bike])
    transport = _transport(radio, STARK, OTHER_KEY)
    with pytest.raises(AuthenticationError, match="refused the key") as caught:
        await transport.open()
    assert bike.connect_attempts == 1  # the same key would be refused again
    assert not transport.is_open and bike.client is None
    for text in (KEY, OTHER_KEY):
        assert text.decode() not in str(caught.value)


@pytest.mark.parametrize("secret", [None, b"0011", b"zz112233445566778899aabbccddeeff", KEY + b"00"])
async def test_a_missing_or_malformed_secret_is_refused_before_anything_is_written(secret: bytes | None) -> None:
    bike = _bike(secret=KEY)
    radio = FakeBluetooth([bike])
    with pytest.raises(AuthenticationError, match="32 hex digits") as caught:
        await _transport(radio, STARK, secret).open()
    assert bike.responses == [] and bike.challenges == []
    if secret:
        assert secret.decode() not in str(caught.value)


async def test_telemetry_is_subscribed_only_after_the_key_was_accepted() -> None:
    # The fake refuses a subscription to a tagged characteristic before authentication ("insufficient
    # authorization"); a transport that subscribed first would fail here.
    bike = _bike(secret=KEY)
    radio = FakeBluetooth([bike])
    transport = _transport(radio, STARK, KEY)
    await transport.open()
    try:
        assert bike.authenticated
        chunk = await transport.receive(timeout=1.0)
        assert chunk[:2] in set(STARK.gatt_profiles[0].tag_of.values())
    finally:
        await transport.close()


def _impatient() -> CompiledProtocol:
    """Stark Varg with a 0.2 s authentication timeout (a test must not wait 5 s)."""
    data = STARK.definition.model_dump(exclude={"source"})
    data["gatt"]["profiles"][0]["authenticate"]["timeout"] = 0.2
    return compile_definition(definition_from_mapping(data, source="<test variant>"))


async def test_a_silent_verdict_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = _impatient()
    bike = FakePeripheral(protocol, ADDRESS, name=VIN, mtu=247, secret=KEY)
    monkeypatch.setattr(bike, "_answer_challenge", lambda char, data: bike.responses.append(data))
    radio = FakeBluetooth([bike])
    transport = _transport(radio, protocol, KEY)
    with pytest.raises(ConnectError, match="authentication did not finish"):
        await transport.open()
    assert not transport.is_open


async def test_the_key_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bike = _bike(secret=KEY)
    radio = FakeBluetooth([bike])
    async with BatteryClient(STARK, _transport(radio, STARK, KEY), options=STREAMED) as client:
        await client.read()
    response = bike.responses[0]
    for text in (KEY.decode(), KEY.decode().upper(), response.hex(), response.hex().upper()):
        assert text not in caplog.text


def test_a_device_without_the_authentication_characteristic_is_not_this_profile() -> None:
    services = gatt_for_protocol(STARK)
    selection = select_characteristics(gatt_tree(services), STARK.gatt_profiles)
    assert selection is not None and selection.authenticate is not None
    assert selection.authenticate.uuid == AUTH.characteristic
    for service in services:
        service.characteristics[:] = [c for c in service.characteristics if c.uuid != AUTH.characteristic]
    assert select_characteristics(gatt_tree(services), STARK.gatt_profiles) is None


def _auth_characteristic(bike: FakePeripheral) -> Any:
    (char,) = [c for c in bike.characteristics() if c.uuid == AUTH.characteristic]
    return char


async def test_a_verdict_notified_while_the_response_is_written_does_not_outrank_the_one_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A leftover "accepted" arrives while the (wrong) response is in flight; the bike's real verdict comes after.
    # Taken as the verdict, the leftover let the transport on to a telemetry subscription the bike refused,
    # with a message about the PIN and pairing.
    bike = _bike(secret=KEY)
    write = bike._write

    async def slow_write(char: Any, data: bytes, mode: Any) -> None:
        if char.uuid == AUTH.characteristic and bike.client is not None:
            bike.client._notify(char, AUTH.accepted)
            await asyncio.sleep(0.02)
        await write(char, data, mode)

    monkeypatch.setattr(bike, "_write", slow_write)
    transport = _transport(FakeBluetooth([bike]), STARK, OTHER_KEY)
    with pytest.raises(AuthenticationError, match="refused the key"):
        await transport.open()


async def test_a_verdict_sent_from_the_devices_write_handler_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some GATT servers notify from inside their write handler: the verdict comes before the write's response.
    bike = _bike(secret=KEY)
    write = bike._write

    async def answering_before_the_write_returns(char: Any, data: bytes, mode: Any) -> None:
        await write(char, data, mode)  # queues the verdict
        if char.uuid == AUTH.characteristic:
            await asyncio.sleep(0.02)  # the write's response comes later

    monkeypatch.setattr(bike, "_write", answering_before_the_write_returns)
    transport = _transport(FakeBluetooth([bike]), STARK, KEY)
    await transport.open()
    try:
        assert bike.authenticated
    finally:
        await transport.close()


async def test_the_response_is_written_without_response_where_only_that_is_allowed() -> None:
    bike = _bike(secret=KEY)
    char = _auth_characteristic(bike)
    char.properties[:] = ["read", "write-without-response", "notify"]
    transport = _transport(FakeBluetooth([bike]), STARK, KEY)
    await transport.open()  # a write with response would be refused ("not permitted")
    try:
        assert bike.authenticated
    finally:
        await transport.close()


def test_an_authentication_characteristic_that_cannot_be_read_is_not_this_profile() -> None:
    services = gatt_for_protocol(STARK)
    for service in services:
        for char in service.characteristics:
            if char.uuid == AUTH.characteristic:
                char.properties[:] = ["write", "notify"]
    assert select_characteristics(gatt_tree(services), STARK.gatt_profiles) is None


async def test_a_refusal_while_subscribing_names_the_key_for_a_protocol_that_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bike accepted nothing, yet a verdict said so: its refusal of the telemetry is about the key.
    bike = _bike(secret=KEY)
    monkeypatch.setattr(bike, "_answer_challenge", lambda char, data: _accept_falsely(bike, char, data))
    transport = _transport(FakeBluetooth([bike]), STARK, OTHER_KEY)
    with pytest.raises(AuthenticationError, match="'secret'") as caught:
        await transport.open()
    assert "transport.pin" not in str(caught.value)


def _accept_falsely(bike: FakePeripheral, char: Any, data: bytes) -> None:
    bike.responses.append(data)
    assert bike.client is not None
    asyncio.get_running_loop().call_soon(bike.client._notify, char, AUTH.accepted)

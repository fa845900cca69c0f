"""Engine 6: a GATT profile's further characteristics over the BLE transport (fake bleak, simulated BMS).

``connect_writes`` (Dyness Junior: an unlock frame to ``fed5`` before JBD's requests) and ``also_notify``
(Super-B v2: frame type 02 on a second notify characteristic), end to end through `BatteryClient`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from bmsgate.errors import AuthenticationError, ConnectError, DeviceTimeout
from bmsgate.protocols import CompiledProtocol, compile_definition, get_protocol
from bmsgate.protocols.definition import definition_from_mapping, normalize_uuid
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.testing import FakeBluetooth, FakePeripheral, gatt_for_protocol
from bmsgate.transports.ble import BleTransport

from .helpers import make_transport

JBD = get_protocol("jbd")
DYNESS = get_protocol("dyness-jun")
SUPERB_V2 = get_protocol("superb-v2")
DYNESS_PROFILE = len(JBD.gatt_profiles) - 1
UNLOCK = (normalize_uuid("fed5"), bytes.fromhex("AA5501000056"))
SECOND_NOTIFY = normalize_uuid("e0fef452-9d2b-4005-a1e3-69fe1102b436")
ADDRESS = "AA:BB:CC:DD:EE:01"
FAST = ClientOptions(request_timeout=0.3, retries=1, retry_backoff=0.01, poll_deadline=3.0)
STREAMED = ClientOptions(request_timeout=1.5, retries=0, poll_deadline=3.0)
"""The simulated Super-B v2 sends type 02 every second, the first one before the transport subscribed."""


def _transport(radio: FakeBluetooth, protocol: CompiledProtocol) -> BleTransport:
    return make_transport(radio, protocol, address=ADDRESS)


def _without(protocol: CompiledProtocol, key: str) -> CompiledProtocol:
    """The protocol with `key` removed from every GATT profile (what an engine-5 file would say)."""
    data = protocol.definition.model_dump(exclude={"source"})
    data.pop("requires")
    for profile in data["gatt"]["profiles"]:
        profile.pop(key)
    return compile_definition(definition_from_mapping(data, source="<test variant>"))


def _dyness(**kwargs: Any) -> FakePeripheral:
    return FakePeripheral(
        DYNESS, ADDRESS, name="R07-0042", profile=DYNESS_PROFILE, pack=PackConfig(cells=4, ntc_count=2), **kwargs
    )


def _second_characteristic_for_type_02(chunk: bytes) -> str | None:
    return SECOND_NOTIFY if chunk[:1] == b"\x02" else SUPERB_V2.gatt_profiles[0].notify


def _superb_v2() -> FakePeripheral:
    # 24-byte frames in one notification need an MTU above the default 23.
    return FakePeripheral(
        SUPERB_V2, ADDRESS, name="Epsilon V2", mtu=64, notify_route=_second_characteristic_for_type_02
    )


# -- connect_writes ---------------------------------------------------------------------------------------


async def test_dyness_is_unlocked_on_fed5_before_its_first_request() -> None:
    bms = _dyness()
    radio = FakeBluetooth([bms])
    async with BatteryClient(DYNESS, _transport(radio, DYNESS), options=FAST) as client:
        snapshot = await client.read()
        assert bms.side_writes == [UNLOCK]
        await client.read()
    assert snapshot.cell_count == 4
    assert bms.side_writes == [UNLOCK]  # once per connection, not per poll
    assert bms.writes and not bms.dropped_writes  # no request reached the board while it was locked
    assert all(frame != UNLOCK[1] for frame, _mode in bms.writes)  # the unlock is not sent to the UART


async def test_every_new_connection_unlocks_again() -> None:
    bms = _dyness()
    radio = FakeBluetooth([bms])
    transport = _transport(radio, DYNESS)
    for _ in range(2):
        async with BatteryClient(DYNESS, transport, options=FAST) as client:
            await client.read()
    assert bms.side_writes == [UNLOCK, UNLOCK]


async def test_a_locked_board_does_not_answer_without_the_unlock() -> None:
    # The same board read through a definition whose profile lacks connect_writes: JBD's requests go unanswered.
    bms = _dyness()
    radio = FakeBluetooth([bms])
    plain = _without(DYNESS, "connect_writes")
    async with BatteryClient(plain, _transport(radio, plain), options=FAST) as client:
        with pytest.raises(DeviceTimeout):
            await client.read()
    assert bms.side_writes == []
    assert bms.dropped_writes


async def test_other_jbd_boards_never_get_the_unlock() -> None:
    bms = FakePeripheral(JBD, ADDRESS, pack=PackConfig(cells=4, ntc_count=2))
    radio = FakeBluetooth([bms])
    transport = _transport(radio, JBD)
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
        assert transport.selection is not None
        assert transport.selection.connect_writes == ()
    assert bms.side_writes == []


async def test_a_board_without_the_unlock_characteristic_is_not_the_dyness_profile() -> None:
    services = gatt_for_protocol(DYNESS, profile=DYNESS_PROFILE)
    for service in services:
        service.characteristics[:] = [c for c in service.characteristics if c.uuid != UNLOCK[0]]
    bms = FakePeripheral(DYNESS, ADDRESS, services=services, profile=DYNESS_PROFILE)
    radio = FakeBluetooth([bms])
    transport = _transport(radio, DYNESS)
    with pytest.raises(ConnectError, match=r"no GATT profile of protocol jbd .*fe00/fe02/fe01"):
        await transport.open()
    assert not transport.is_open


# -- also_notify ------------------------------------------------------------------------------------------


async def test_superb_v2_reads_frames_of_both_notify_characteristics() -> None:
    bms = _superb_v2()
    radio = FakeBluetooth([bms])
    transport = _transport(radio, SUPERB_V2)
    async with BatteryClient(SUPERB_V2, transport, options=STREAMED) as client:
        snapshot = await client.read()
        assert transport.selection is not None
        assert [c.uuid for c in transport.selection.also_notify] == [SECOND_NOTIFY]
    # voltage and current come in type 02 (second characteristic), SoC and cycles in type 00 (the first).
    assert snapshot.voltage is not None
    assert snapshot.current is not None
    assert snapshot.soc is not None
    assert snapshot.cycles is not None
    assert {frame for frame, _mode in bms.writes} == {bytes.fromhex("215400")}


async def test_without_the_second_subscription_the_measurements_never_arrive() -> None:
    # The same board read through a definition without also_notify (frame_per_chunk alone is still valid).
    bms = _superb_v2()
    radio = FakeBluetooth([bms])
    plain = _without(SUPERB_V2, "also_notify")
    async with BatteryClient(plain, _transport(radio, plain), options=STREAMED) as client:
        with pytest.raises(DeviceTimeout, match="measurements"):
            await client.read()


async def test_further_notifications_do_not_confirm_a_write_mode() -> None:
    # Only the characteristic requests are answered on says a write arrived: a frame sent unasked on the
    # second characteristic must not lock `write_mode: auto` into a mode that was never answered.
    bms = _superb_v2()
    radio = FakeBluetooth([bms])
    transport = _transport(radio, SUPERB_V2)
    await transport.open()
    try:
        await transport.write(bytes.fromhex("00"))  # no reply to this, but type 02 keeps streaming
        chunk = await transport.receive(timeout=2.0)
        while chunk[:1] != b"\x02":
            chunk = await transport.receive(timeout=2.0)
        assert transport.confirmed_write_mode is None
    finally:
        await transport.close()


async def test_a_dropped_link_locks_the_board_again() -> None:
    bms = _dyness()
    radio = FakeBluetooth([bms])
    transport = _transport(radio, DYNESS)
    async with BatteryClient(DYNESS, transport, options=FAST) as client:
        await client.read()
        bms.drop_link()
        assert bms.locked
        with contextlib.suppress(ConnectError):
            await client.read()  # may still find the dropped link; the next poll reconnects
        await client.read()  # on a new connection, which the transport unlocked
    assert bms.side_writes == [UNLOCK, UNLOCK]


async def test_a_refused_unlock_write_is_an_authentication_error_and_frees_the_link() -> None:
    bms = _dyness(pairing_required=True)
    radio = FakeBluetooth([bms])
    transport = _transport(radio, DYNESS)
    with pytest.raises(AuthenticationError, match="writing the connect-time frame to fed5"):
        await transport.open()
    assert not transport.is_open
    assert bms.client is None
    assert bms.side_writes == []

"""BleTransport over bmsgate.testing's fake bleak client and scanner (no radio needed)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)

from bmsgate.errors import (
    AuthenticationError,
    ConnectError,
    DeviceTimeout,
    FrameError,
    TransportError,
)
from bmsgate.protocols import get_protocol
from bmsgate.protocols.compiled import CompiledProtocol, compile_definition
from bmsgate.protocols.definition import definition_from_mapping
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig
from bmsgate.testing import FakeBleakClient, FakeBluetooth, FakePeripheral, FaultPlan
from bmsgate.transports.ble import BleScanner, BleTransport, ReconnectPolicy, map_ble_error

from . import helpers

JBD = get_protocol("jbd")
ADDRESS = "A4:C1:37:00:00:01"
FAST = ClientOptions(request_timeout=0.15, retries=1, retry_backoff=0.01, poll_deadline=3.0)


def jbd_variant(**gatt: Any) -> CompiledProtocol:
    """JBD's frames with a different GATT block (e.g. JK-style ffe0/ffe1/ffe1)."""
    data = JBD.definition.model_dump(exclude={"source"})
    data["gatt"] = {**data["gatt"], **gatt}
    data.pop("requires")  # the variant's constructs differ (JBD's Dyness profile may be gone)
    return compile_definition(definition_from_mapping(data, source="<test variant>"))


def make_transport(radio: FakeBluetooth, protocol: CompiledProtocol = JBD, **kwargs: Any) -> BleTransport:
    if "name" not in kwargs and "address" not in kwargs:
        kwargs["address"] = ADDRESS
    return helpers.make_transport(radio, protocol, **kwargs)


def peripheral(protocol: CompiledProtocol = JBD, **kwargs: Any) -> FakePeripheral:
    kwargs.setdefault("pack", PackConfig(cells=16, ntc_count=2))
    return FakePeripheral(protocol, ADDRESS, **kwargs)


async def test_end_to_end_snapshot_through_retry_connector() -> None:
    radio = FakeBluetooth([peripheral()])
    transport = make_transport(radio)
    async with BatteryClient(JBD, transport, battery_id="house", options=FAST) as client:
        snapshot = await client.read()
    assert snapshot.battery_id == "house"
    assert snapshot.cell_count == 16
    assert snapshot.voltage == pytest.approx(sum(snapshot.cell_voltages), abs=0.05)
    assert transport.rssi == -60
    assert not transport.is_open
    assert radio.peripherals[0].client is None


@pytest.mark.parametrize("mtu", [23, 32, 64, 185, 247])
async def test_notifications_are_mtu_sized_and_reassembled(mtu: int) -> None:
    bms = peripheral(mtu=mtu, pack=PackConfig(cells=24, ntc_count=4))
    radio = FakeBluetooth([bms])
    async with BatteryClient(JBD, make_transport(radio), options=FAST) as client:
        snapshot = await client.read()
    assert snapshot.cell_count == 24
    assert max(len(chunk) for chunk in bms.notifications) <= mtu - 3
    if mtu == 23:
        # 0x03 (38 bytes) + 0x04 (55 bytes) + 0x05: at least 2 + 3 + 1 notifications at the default MTU.
        assert len(bms.notifications) >= 6
        assert sum(len(chunk) == 20 for chunk in bms.notifications) >= 3


@pytest.mark.parametrize(
    ("accepts", "expected"), [("without_response", "without_response"), ("with_response", "with_response")]
)
async def test_write_mode_fallback_is_remembered(accepts: Any, expected: str) -> None:
    bms = peripheral(accepts=accepts)
    radio = FakeBluetooth([bms])
    transport = make_transport(radio)
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
        dropped_after_first = len(bms.dropped_writes)
        await client.read()
    assert transport.confirmed_write_mode == expected
    assert len(bms.dropped_writes) == dropped_after_first  # no more probing once a mode worked
    assert {mode for _, mode in bms.writes} == {expected}
    # Remembered across a reconnect of the same transport.
    await transport.open()
    assert transport.write_mode == expected
    await transport.close()


async def test_write_mode_from_definition_and_override() -> None:
    bms = peripheral()
    radio = FakeBluetooth([bms])
    transport = make_transport(radio, protocol=jbd_variant(write_mode="without_response"))
    async with BatteryClient(transport.protocol, transport, options=FAST) as client:
        await client.read()
    assert {mode for _, mode in bms.writes} == {"without_response"}
    override = make_transport(radio, write_mode="with_response")
    async with BatteryClient(JBD, override, options=FAST) as client:
        await client.read()
    assert bms.writes[-1][1] == "with_response"


async def test_only_listed_write_property_is_used() -> None:
    bms = peripheral(write_properties=("write-without-response",))
    transport = make_transport(FakeBluetooth([bms]))
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
    assert transport.write_mode == "without_response"
    assert not bms.dropped_writes


async def test_refused_write_switches_mode_at_once() -> None:
    class RefusesRequests(FakeBleakClient):
        async def write_gatt_char(
            self, char_specifier: Any, data: bytes | bytearray, response: bool | None = None
        ) -> None:
            if response:
                raise BleakGATTProtocolError(0x03)  # write not permitted
            await super().write_gatt_char(char_specifier, data, response)

    bms = peripheral()
    transport = make_transport(FakeBluetooth([bms]), client_factory=RefusesRequests)
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
    assert transport.confirmed_write_mode == "without_response"
    assert bms.writes[0][1] == "without_response"


async def test_large_write_without_response_is_split_to_the_mtu() -> None:
    bms = peripheral(write_properties=("write-without-response",))
    transport = make_transport(FakeBluetooth([bms]))
    await transport.open()
    await transport.write(bytes(range(50)))
    await transport.close()
    assert [len(data) for data, _ in bms.writes] == [20, 20, 10]


async def test_disconnect_mid_frame_then_reconnect() -> None:
    bms = peripheral(faults=FaultPlan(disconnect_mid_frame=1.0))
    transport = make_transport(FakeBluetooth([bms]))
    client = BatteryClient(JBD, transport, options=FAST)
    with pytest.raises(ConnectError, match="link dropped"):
        await client.read()
    assert not transport.is_open
    bms.faults.disconnect_mid_frame = 0.0
    snapshot = await client.read()
    assert snapshot.cell_count == 16
    assert bms.connections == 2
    await client.close()


async def test_link_drop_while_idle_is_reported() -> None:
    bms = peripheral()
    transport = make_transport(FakeBluetooth([bms]))
    await transport.open()
    bms.drop_link()
    with pytest.raises(ConnectError, match="link dropped"):
        await transport.receive(timeout=1.0)
    assert not transport.is_open
    await transport.close()


async def test_silence_times_out_after_trying_both_modes() -> None:
    bms = peripheral(faults=FaultPlan(silent=True))
    transport = make_transport(FakeBluetooth([bms]))
    async with BatteryClient(JBD, transport, options=FAST) as client:
        with pytest.raises(DeviceTimeout):
            await client.read()
    assert {mode for _, mode in bms.writes} == {"with_response", "without_response"}
    assert transport.confirmed_write_mode is None


async def test_corrupt_and_dropped_notifications() -> None:
    bms = peripheral(faults=FaultPlan(corrupt_checksum=1.0))
    async with BatteryClient(JBD, make_transport(FakeBluetooth([bms])), options=FAST) as client:
        with pytest.raises(FrameError):
            await client.read()
    quiet = peripheral(drop_notifications=1.0)
    async with BatteryClient(JBD, make_transport(FakeBluetooth([quiet])), options=FAST) as client:
        with pytest.raises(DeviceTimeout):
            await client.read()


@pytest.mark.parametrize("layout", ["shared", "duplicate"])
async def test_one_uuid_for_notify_and_write(layout: Any) -> None:
    protocol = jbd_variant(profiles=[{"service": "ffe0", "notify": "ffe1", "write": "ffe1"}])
    bms = peripheral(protocol, layout=layout)
    transport = make_transport(FakeBluetooth([bms]), protocol=protocol)
    async with BatteryClient(protocol, transport, options=FAST) as client:
        snapshot = await client.read()
    assert snapshot.cell_count == 16
    assert transport.selection is not None
    assert transport.selection.write is not None
    same = transport.selection.notify.handle == transport.selection.write.handle
    assert same is (layout == "shared")


async def test_second_profile_is_used_when_the_first_is_missing() -> None:
    bms = FakePeripheral(JBD, ADDRESS, services=None, service_uuids=["fff0"])
    from bmsgate.testing import gatt_for_protocol

    bms.services = gatt_for_protocol(JBD, profile=1)
    transport = make_transport(FakeBluetooth([bms]))
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
    assert transport.selection is not None
    assert transport.selection.profile.service.startswith("0000fff0")


async def test_wrong_protocol_names_the_missing_profile() -> None:
    protocol = jbd_variant(profiles=[{"service": "ffe0", "notify": "ffe1", "write": "ffe1"}])
    transport = make_transport(FakeBluetooth([peripheral()]), protocol=protocol)
    with pytest.raises(ConnectError, match="no GATT profile of protocol jbd"):
        await transport.open()


async def test_connect_by_name_case_insensitive() -> None:
    radio = FakeBluetooth([peripheral(name="JBD-SP04S034", rssi=-71)])
    transport = make_transport(radio, name="jbd-sp04s034")
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
    assert transport.rssi == -71
    assert "jbd-sp04s034" in transport.description


async def test_device_not_heard() -> None:
    radio = FakeBluetooth([peripheral(advertising=False)])
    transport = make_transport(radio, scan_timeout=0.2)
    with pytest.raises(ConnectError, match="no device with address"):
        await transport.open()


async def test_adapter_choice() -> None:
    radio = FakeBluetooth([peripheral(adapters=["hci1"])], adapters=("hci0", "hci1"))
    transport = make_transport(radio, adapter="hci1")
    await transport.open()
    assert transport.description.endswith("@hci1")
    await transport.close()
    with pytest.raises(ConnectError, match="no device"):
        await make_transport(radio, adapter="hci0", scan_timeout=0.2).open()
    with pytest.raises(ConnectError, match="hci7"):
        await make_transport(radio, adapter="hci7").open()


async def test_reconnect_with_backoff_inside_open() -> None:
    delays: list[float] = []

    class Recording(ReconnectPolicy):
        def delay(self, failures: int, rng: random.Random | None = None) -> float:
            delays.append(super().delay(failures, rng))
            return delays[-1]

    bms = peripheral(refuse_connections=2)
    policy = Recording(attempts=3, initial_delay=0.01, factor=2.0, jitter=0.0)
    transport = make_transport(FakeBluetooth([bms]), reconnect=policy, use_retry_connector=False)
    await transport.open()
    assert transport.is_open
    assert bms.connect_attempts == 3
    assert delays == [0.01, 0.02]
    await transport.close()


async def test_open_gives_up_after_the_policy_attempts() -> None:
    bms = peripheral(refuse_connections=5)
    policy = ReconnectPolicy(attempts=2, initial_delay=0.01)
    transport = make_transport(FakeBluetooth([bms]), reconnect=policy, use_retry_connector=False)
    with pytest.raises(ConnectError, match="le-connection-abort-by-local") as caught:
        await transport.open()
    assert isinstance(caught.value.__cause__, BleakDBusError)
    assert bms.connect_attempts == 2


async def test_retry_connector_retries_a_refused_connection() -> None:
    bms = peripheral(refuse_connections=1)
    transport = make_transport(FakeBluetooth([bms]))
    await transport.open()
    assert bms.connect_attempts == 2
    await transport.close()


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = ReconnectPolicy(initial_delay=1.0, factor=2.0, max_delay=5.0, jitter=0.2)
    rng = random.Random(4)
    delays = [policy.delay(n, rng) for n in range(6)]
    bases = [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == len(delays)  # jitter spreads equal bases
    with pytest.raises(ValueError, match="attempts"):
        ReconnectPolicy(attempts=0)


async def test_connect_hang_hits_the_timeout() -> None:
    bms = peripheral(hang_on_connect=True)
    transport = make_transport(FakeBluetooth([bms]), connect_timeout=0.2, scan_timeout=0.2)
    with pytest.raises(DeviceTimeout, match="connecting took longer"):
        await transport.open()


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        (TimeoutError(), DeviceTimeout, "timed out"),
        (EOFError(), ConnectError, "D-Bus"),
        (BleakDeviceNotFoundError("AA", "Device not found"), ConnectError, "not found"),
        (BleakDBusError("org.bluez.Error.AuthenticationFailed", []), AuthenticationError, "PIN"),
    ],
)
async def test_connect_errors_are_mapped(error: BaseException, expected: type[Exception], text: str) -> None:
    bms = peripheral(connect_error=error)
    transport = make_transport(FakeBluetooth([bms]), use_retry_connector=False)
    with pytest.raises(expected, match=text) as caught:
        await transport.open()
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BleakGATTProtocolError(0x05), AuthenticationError),
        (BleakGATTProtocolError(0x0F), AuthenticationError),
        (BleakDBusError("org.bluez.Error.Failed", ["Insufficient Authentication"]), AuthenticationError),
        (BleakDBusError("org.bluez.Error.InProgress", ["busy"]), ConnectError),
        (BleakError("Not connected"), ConnectError),
        (BrokenPipeError(), ConnectError),
        (TimeoutError(), DeviceTimeout),
    ],
)
def test_map_ble_error(error: BaseException, expected: type[Exception]) -> None:
    mapped = map_ble_error(error, action="writing", description="ble:x", battery_id="house")
    assert type(mapped) is expected
    assert mapped.battery_id == "house"
    assert str(mapped).startswith("house: ble:x: writing")
    transport_error = map_ble_error(BleakError("x"), action="writing", description="d", fallback=TransportError)
    assert type(transport_error) is TransportError


async def test_pairing_required_without_pin_fails_with_authentication_error() -> None:
    bms = peripheral(pairing_required=True)
    transport = make_transport(FakeBluetooth([bms]), reconnect=ReconnectPolicy(attempts=3, initial_delay=0.01))
    with pytest.raises(AuthenticationError):
        await transport.open()
    assert bms.connect_attempts == 1  # authentication failures are not retried


async def test_pin_or_required_pairing_pairs_first() -> None:
    bms = peripheral(pairing_required=True)
    transport = make_transport(FakeBluetooth([bms]), pin="123456")
    async with BatteryClient(JBD, transport, options=FAST) as client:
        await client.read()
    assert bms.paired
    required = jbd_variant(pairing="required")
    bms2 = peripheral(required, pairing_required=True)
    async with BatteryClient(required, make_transport(FakeBluetooth([bms2]), protocol=required), options=FAST) as c:
        await c.read()
    assert bms2.paired


async def test_pairing_rejected() -> None:
    bms = peripheral(pairing_required=True, pairing_fails=True)
    transport = make_transport(FakeBluetooth([bms]), pin="000000", use_retry_connector=False)
    with pytest.raises(AuthenticationError, match="AuthenticationFailed"):
        await transport.open()


async def test_scanner_merges_names_and_sorts_by_rssi() -> None:
    radio = FakeBluetooth(
        [
            FakePeripheral(JBD, "A4:C1:37:00:00:01", rssi=-80),
            FakePeripheral(JBD, "A4:C1:37:00:00:02", rssi=-50, name=None),
        ]
    )
    heard: list[str] = []
    found = await BleScanner(scanner_factory=radio.scanner).scan(
        0.12, on_advertisement=lambda a: heard.append(a.address)
    )
    assert [adv.address for adv in found] == ["A4:C1:37:00:00:02", "A4:C1:37:00:00:01"]
    assert found[0].name is None
    assert len(heard) >= 4  # repeated advertisements are reported as they come
    assert radio.scans == 1


def test_transport_needs_a_gatt_profile() -> None:
    data = JBD.definition.model_dump(exclude={"source"})
    data["gatt"] = None
    data.pop("requires")
    serial_only = compile_definition(definition_from_mapping(data))
    with pytest.raises(ValueError, match="no GATT profile"):
        BleTransport(serial_only, ADDRESS)
    with pytest.raises(ValueError, match="address or a device name"):
        BleTransport(JBD)


async def test_fake_client_refuses_ambiguous_uuid() -> None:
    protocol = jbd_variant(profiles=[{"service": "ffe0", "notify": "ffe1", "write": "ffe1"}])
    bms = peripheral(protocol, layout="duplicate")
    client = FakeBleakClient(bms)
    await client.connect()
    with pytest.raises(BleakError, match="Multiple"):
        await client.write_gatt_char("ffe1", b"\x00", response=True)
    assert bytes(await client.read_gatt_char("2a00")) == b"JBD-SP04S034"
    await client.disconnect()


async def test_jk_with_two_ffe1_characteristics_end_to_end() -> None:
    from bmsgate.catalog import Kind, default_catalog

    if "jk" not in default_catalog().names(Kind.PROTOCOL):
        pytest.skip("no built-in jk definition")
    jk = get_protocol("jk")
    bms = FakePeripheral(jk, "C8:47:8C:00:00:01", name="JK-B2A24S", layout="duplicate", mtu=185)
    transport = make_transport(FakeBluetooth([bms]), protocol=jk, address="C8:47:8C:00:00:01")
    async with BatteryClient(jk, transport, options=FAST) as client:
        snapshot = await client.read()
    assert snapshot.cell_count == 16
    assert transport.selection is not None
    assert transport.selection.write is not None
    assert transport.selection.notify.handle != transport.selection.write.handle
    assert "notify" in transport.selection.notify.properties


async def test_the_advertised_name_reaches_the_session_for_requests_built_from_it() -> None:
    # D-powercore DXB- packs are unlocked with the last four hex digits of their advertised name.
    dpwrcore = get_protocol("dpwrcore")
    pack = FakePeripheral(dpwrcore, ADDRESS, name="DXB-MockBLEDevice_C0FE", pack=PackConfig(cells=14, ntc_count=1))
    radio = FakeBluetooth([pack])
    transport = make_transport(radio, dpwrcore)
    async with BatteryClient(dpwrcore, transport, options=FAST) as client:
        snapshot = await client.read()
        second = await client.read()
    assert transport.device_name == "DXB-MockBLEDevice_C0FE"
    assert client.session.device_name == "DXB-MockBLEDevice_C0FE"
    assert snapshot.cell_count == 14 == second.cell_count
    unlock = dpwrcore.wire(bytes.fromhex("3A0305640000C0FE022A0D0A"))
    assert list(pack.uart.writes).count(unlock) == 1  # once per connection, before the first request
    assert next(iter(pack.uart.writes)) == unlock
    # Every page the pack sent was acknowledged (written back with bit 7 of its length byte set).
    assert any(write[0] & 0x80 for write in pack.uart.writes)

"""The Modbus sink against real peers: pymodbus clients over TCP and RTU (socat ptys), raw frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from bmsgate.app.ports import check_tcp_port_free
from bmsgate.errors import ConfigError, SinkError
from bmsgate.inverter.modbus import server as server_module
from bmsgate.inverter.modbus import serving
from bmsgate.inverter.modbus import tcp as tcp_module
from bmsgate.inverter.modbus.registermap import RegisterKind, load_register_map
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.modbus.store import RegisterStore
from bmsgate.inverter.modbus.tcp import ModbusTcpServer
from bmsgate.runtime.backoff import Backoff
from bmsgate.runtime.hub import SnapshotHub

from .helpers import FakeClock, free_port, make_controller, make_snapshot, modbus_crc, running_sink, wait_refresh

SOC, VOLTAGE, CURRENT, TEMPERATURE, CCL, DCL, ALARMS, STATUS, HEARTBEAT = (
    0x0100, 0x0101, 0x0102, 0x0103, 0x0105, 0x0106, 0x0107, 0x0108, 0x0109,
)  # fmt: skip
CELL_MIN, CELL_MAX, HEARTBEAT_IN = 0x010D, 0x010E, 0x0117
STALE_BIT, INVERTER_MISSING_BIT = 1 << 15, 1 << 11


@contextlib.asynccontextmanager
async def tcp_client(port: int) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def read(client: AsyncModbusTcpClient | AsyncModbusSerialClient, address: int, count: int = 1) -> list[int]:
    response = await client.read_holding_registers(address, count=count, slave=1)
    assert not response.isError(), response
    return list(response.registers)


def exception_code(response: object) -> int | None:
    code = getattr(response, "exception_code", None)
    return code if isinstance(code, int) else None


def inverter_present(sink: ModbusSink) -> bool | None:
    return sink.status.inverter_present


def tcp_settings(**changes: object) -> ModbusSettings:
    values: dict[str, object] = {"mode": "tcp", "port": free_port()}
    return ModbusSettings.model_validate(values | changes)


async def test_tcp_reads_holding_and_input_registers() -> None:
    hub = SnapshotHub()
    settings = tcp_settings()
    async with running_sink(settings, hub) as sink, tcp_client(settings.port) as client:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        assert await read(client, SOC, 4) == [50, 5280, 0x10000 - 1230, 210]
        block = await read(client, 0x0100, 30)
        assert block[CCL - 0x0100] == 1000
        assert block[STATUS - 0x0100] == 1
        inputs = await client.read_input_registers(SOC, count=3, slave=1)
        assert inputs.registers == [50, 5280, 0x10000 - 1230]
        # Modbus TCP answers any unit id: we are the end device.
        other_unit = await client.read_holding_registers(SOC, count=1, slave=0xFF)
        assert other_unit.registers == [50]
        assert sink.status.to_dict()["state"] == "ok"


async def test_tcp_bad_requests_get_exception_responses() -> None:
    hub = SnapshotHub()
    settings = tcp_settings()
    async with running_sink(settings, hub), tcp_client(settings.port) as client:
        outside = await client.read_holding_registers(0x0010, count=2, slave=1)
        assert outside.isError()
        assert exception_code(outside) == 2  # illegal data address
        straddling = await client.read_holding_registers(0x011F, count=2, slave=1)
        assert exception_code(straddling) == 2
        read_only = await client.write_register(SOC, 1, slave=1)
        assert exception_code(read_only) == 2
        coils = await client.read_coils(0, count=8, slave=1)
        assert exception_code(coils) == 1  # illegal function: we have no bit tables
        write_coil = await client.write_coil(0, True, slave=1)
        assert exception_code(write_coil) == 1
        inputs_outside = await client.read_input_registers(0x0107, count=1, slave=1)
        assert exception_code(inputs_outside) == 2
        assert await read(client, SOC) == [0]  # the connection still serves

    # An unknown function code: pymodbus 3.8 answers "illegal function" (with its own header quirks).
    settings = tcp_settings()
    async with running_sink(settings, hub):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        writer.write(bytes([0, 1, 0, 0, 0, 2, 1, 0x41]))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(64), 2)
        assert answer[7] & 0x80
        assert answer[8] == 1
        writer.write(bytes([0, 2, 0, 0, 0, 6, 1, 3, 0x01, 0x00, 0, 1]))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(64), 2)
        assert answer[:2] == b"\x00\x02"
        assert answer[7:9] == b"\x03\x02"
        writer.close()


async def test_stale_transitions(clock: FakeClock) -> None:
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10.0)
    settings = tcp_settings()
    async with running_sink(settings, hub, clock) as sink, tcp_client(settings.port) as client:
        assert await read(client, STATUS) == [0]  # starting
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        assert await read(client, CCL, 2) == [1000, 1000]
        beat = (await read(client, HEARTBEAT))[0]

        clock.advance(11.0)
        await wait_refresh(sink)
        ccl, dcl, alarms, status, frozen = await read(client, CCL, 5)
        assert (ccl, dcl, status) == (0, 0, 4)
        assert alarms & STALE_BIT
        assert frozen == beat
        assert sink.status.reason.value == "stale data"
        await wait_refresh(sink)
        assert (await read(client, HEARTBEAT))[0] == beat  # no fresh data, no heartbeat

        hub.publish(make_snapshot())
        await wait_refresh(sink)
        ccl, dcl, alarms, status, beat_after = await read(client, CCL, 5)
        assert status == 1
        assert not alarms & STALE_BIT
        assert beat_after == beat + 1
        assert (ccl, dcl) == (0, 0)  # recovering: zero limits hold before ramping
        clock.advance(31.0)
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        assert (await read(client, CCL))[0] > 0


def test_stale_bank_keeps_its_last_measurements(clock: FakeClock) -> None:
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10.0)
    controller = make_controller(clock=clock)
    sink = ModbusSink(tcp_settings(), controller)

    def refresh(*, fresh_data: bool = False) -> None:
        controller.refresh(hub, fresh_data=fresh_data)
        sink.refresh()

    def registers(*addresses: int) -> list[int]:
        holding = sink.store.snapshot(RegisterKind.HOLDING)
        return [holding[address] for address in addresses]

    measurements = (SOC, VOLTAGE, TEMPERATURE, CELL_MIN, CELL_MAX)
    refresh()  # nothing ever arrived: measurements read their missing value
    assert registers(*measurements, STATUS) == [0, 0, 0, 0, 0, 0]

    hub.publish(make_snapshot(soc=63.0, voltage=53.1))
    refresh(fresh_data=True)
    fresh = registers(*measurements)
    assert fresh == [63, 5310, 210, 3300, 3300]
    assert registers(CCL, DCL, STATUS) == [1000, 1000, 1]

    clock.advance(11.0)
    refresh()
    assert sink.status.bank.stale
    assert registers(*measurements) == fresh  # last fresh values, not 0
    ccl, dcl, alarms, status = registers(CCL, DCL, ALARMS, STATUS)
    assert (ccl, dcl, status) == (0, 0, 4)  # but never presented as fresh
    assert alarms & STALE_BIT
    clock.advance(100.0)
    refresh()
    assert registers(*measurements) == fresh
    assert sink.status.bank.soc is None  # the status other outputs read is not altered

    hub.publish(make_snapshot(soc=64.0, voltage=53.2))
    refresh(fresh_data=True)
    assert registers(SOC, VOLTAGE, STATUS) == [64, 5320, 1]


async def test_stale_measurements_over_tcp(clock: FakeClock) -> None:
    hub = SnapshotHub(clock=clock)
    hub.register("a", stale_after=10.0)
    settings = tcp_settings()
    async with running_sink(settings, hub, clock) as sink, tcp_client(settings.port) as client:
        assert await read(client, SOC, 4) == [0, 0, 0, 0]  # no data yet: missing values
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        before = await read(client, SOC, 4)
        assert before == [50, 5280, 0x10000 - 1230, 210]
        clock.advance(11.0)
        await wait_refresh(sink)
        soc, voltage, current, temperature, _cvl, ccl, dcl, alarms, status = await read(client, SOC, 9)
        assert [soc, voltage, current, temperature] == before
        assert (ccl, dcl, status) == (0, 0, 4)
        assert alarms & STALE_BIT


async def test_heartbeat_out_counts_fresh_updates() -> None:
    hub = SnapshotHub()
    settings = tcp_settings()
    async with running_sink(settings, hub) as sink, tcp_client(settings.port) as client:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        first = (await read(client, HEARTBEAT))[0]
        for _ in range(3):
            hub.publish(make_snapshot())
            await wait_refresh(sink)
        assert (await read(client, HEARTBEAT))[0] == first + 3
        hub.publish(make_snapshot("not-in-the-bank"))
        await wait_refresh(sink)
        assert (await read(client, HEARTBEAT))[0] == first + 3


async def test_heartbeat_in_reports_a_missing_inverter(clock: FakeClock) -> None:
    hub = SnapshotHub(clock=clock)
    settings = tcp_settings(heartbeat_in_period=1.0, heartbeat_in_missed_periods=3)
    async with running_sink(settings, hub, clock) as sink, tcp_client(settings.port) as client:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        assert inverter_present(sink) is None
        assert not (await client.write_register(HEARTBEAT_IN, 0x00FF, slave=1)).isError()
        await wait_refresh(sink)
        assert inverter_present(sink) is True
        assert await read(client, HEARTBEAT_IN) == [0x00FF]

        clock.advance(2.0)
        await client.write_register(HEARTBEAT_IN, 0x00FF, slave=1)  # same value: not a heartbeat
        clock.advance(1.5)
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        assert inverter_present(sink) is False
        assert (await read(client, ALARMS))[0] & INVERTER_MISSING_BIT

        await client.write_register(HEARTBEAT_IN, 0xFF00, slave=1)
        await wait_refresh(sink)
        assert inverter_present(sink) is True
        assert not (await read(client, ALARMS))[0] & INVERTER_MISSING_BIT


async def test_port_in_use_is_a_sink_error_and_the_server_retries() -> None:
    settings = tcp_settings()
    store = RegisterStore(load_register_map("generic"))
    first = ModbusTcpServer(settings, store)
    handle = await first.start()
    try:
        with pytest.raises(SinkError, match="cannot open"):
            await ModbusTcpServer(settings, store).start()
        retrying = asyncio.create_task(ModbusTcpServer(settings, store).run())
        await asyncio.sleep(0)
        assert not retrying.done()
        retrying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retrying
    finally:
        await first.stop(handle)


def test_check_tcp_port_free() -> None:
    port = free_port()
    check_tcp_port_free("127.0.0.1", port, key_path="--modbus-tcp")
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(ConfigError) as caught:
            check_tcp_port_free("127.0.0.1", port, key_path="--modbus-tcp")
    assert caught.value.key_path == "--modbus-tcp"
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "in use" in str(caught.value).lower()
    check_tcp_port_free("127.0.0.1", port, key_path="--modbus-tcp")  # free again once closed
    with pytest.raises(ConfigError, match=re.escape("cannot listen on 192.0.2.1:")):
        check_tcp_port_free("192.0.2.1", port, key_path="--modbus-tcp")  # TEST-NET: not an address of this machine


async def test_check_tcp_port_free_sees_a_running_modbus_server() -> None:
    settings = tcp_settings()
    server = ModbusTcpServer(settings, RegisterStore(load_register_map("generic")))
    handle = await server.start()
    try:
        with pytest.raises(ConfigError, match=re.escape(f"127.0.0.1:{settings.port}")):
            check_tcp_port_free(settings.host, settings.port, key_path="--modbus-tcp")
    finally:
        await server.stop(handle)


def pymodbus_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("pymodbus")]


async def test_busy_port_is_logged_once_without_pymodbus_noise(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "Backoff", lambda *_args, **_kwargs: Backoff(0.01, 0.01))
    settings = tcp_settings()
    store = RegisterStore(load_register_map("generic"))
    first = ModbusTcpServer(settings, store)
    handle = await first.start()
    caplog.set_level(logging.INFO)
    try:
        retrying = asyncio.create_task(ModbusTcpServer(settings, store).run())
        await asyncio.sleep(0.2)  # many retries
        retrying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retrying
    finally:
        await first.stop(handle)
    ours = [record for record in caplog.records if record.name == tcp_module.__name__]
    assert len(ours) == 1
    assert ours[0].levelno == logging.WARNING
    assert "cannot open" in ours[0].getMessage()
    assert pymodbus_records(caplog) == []


def test_pymodbus_logs_only_when_debugging(caplog: pytest.LogCaptureFixture) -> None:
    from pymodbus.logging import Log

    server_module.quiet_pymodbus_logging()  # idempotent
    pymodbus_logger = logging.getLogger(server_module.PYMODBUS_LOGGER)
    assert vars(Log)["_logger"] is pymodbus_logger  # the one logger pymodbus logs through
    assert sum(type(f).__name__ == "_OnlyWhenDebugging" for f in pymodbus_logger.filters) == 1
    caplog.set_level(logging.INFO)
    pymodbus_logger.warning("Failed to start server address already in use")
    pymodbus_logger.error("some pymodbus error")
    assert pymodbus_records(caplog) == []
    caplog.set_level(logging.DEBUG)
    pymodbus_logger.warning("Failed to start server address already in use")
    pymodbus_logger.debug("a frame")
    assert [record.getMessage() for record in pymodbus_records(caplog)] == [
        "Failed to start server address already in use",
        "a frame",
    ]


# -- RTU through a socat pty pair --------------------------------------------------------------------------


def rtu_settings(port: Path, **changes: object) -> ModbusSettings:
    values: dict[str, object] = {
        "mode": "rtu",
        "serial_port": str(port),
        "slave_id": 21,
    }
    return ModbusSettings.model_validate(values | changes)


@contextlib.asynccontextmanager
async def rtu_client(port: Path) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(
        str(port), framer=FramerType.RTU, baudrate=9600, timeout=0.5, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


def raw_exchange(port: Path, frame: bytes, expect: int) -> bytes:
    with serial.Serial(str(port), 9600, timeout=0.3) as line:
        line.reset_input_buffer()
        line.write(frame)
        return bytes(line.read(expect))


async def test_rtu_reads_and_ignores_other_slaves_and_bad_crc(pty_pair: tuple[Path, Path]) -> None:
    server_port, client_port = pty_pair
    hub = SnapshotHub()
    async with running_sink(rtu_settings(server_port, register_map="byd-hvm-fronius"), hub) as sink:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        async with rtu_client(client_port) as client:
            response = await client.read_holding_registers(300, count=24, slave=21)
            assert not response.isError()
            assert response.registers[3] == 5000  # SoC 50.00 %
            assert response.registers[0] == 3  # active
            marker = await client.read_holding_registers(100, count=2, slave=21)
            assert marker.registers == [0x5349, 1]
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(300, count=1, slave=22)  # not ours: silence
            illegal = await client.read_holding_registers(0, count=1, slave=21)
            assert exception_code(illegal) == 2
            assert not (await client.write_register(401, 0x00FF, slave=21)).isError()
        assert inverter_present(sink) is not False

        request = bytes([21, 3]) + (303).to_bytes(2, "big") + (1).to_bytes(2, "big")
        corrupted = request + bytes(b ^ 0xFF for b in modbus_crc(request))
        assert await asyncio.to_thread(raw_exchange, client_port, corrupted, 7) == b""
        good = await asyncio.to_thread(raw_exchange, client_port, request + modbus_crc(request), 7)
        assert good[:3] == bytes([21, 3, 2])
        assert int.from_bytes(good[3:5], "big") == 5000
        assert good[5:] == modbus_crc(good[:5])


# -- client mode ----------------------------------------------------------------------------------------------


async def test_client_mode_writes_the_map_into_a_device() -> None:
    from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
    from pymodbus.server import ModbusTcpServer

    port = free_port()
    device = ModbusSlaveContext(hr=ModbusSequentialDataBlock(0, [0] * 1024))  # type: ignore[no-untyped-call]
    server = ModbusTcpServer(ModbusServerContext(slaves=device, single=True), address=("127.0.0.1", port))  # type: ignore[no-untyped-call]
    assert await server.listen()
    hub = SnapshotHub()
    settings = ModbusSettings(mode="client", port=port, client_interval=0.05)
    try:
        async with running_sink(settings, hub) as sink:
            from bmsgate.inverter.modbus.server import ModbusClientWriter

            assert isinstance(sink.endpoint, ModbusClientWriter)
            hub.publish(make_snapshot())
            await wait_refresh(sink)
            while True:
                sink.endpoint.written.clear()
                await asyncio.wait_for(sink.endpoint.written.wait(), 3)
                # The device's datastore is 1-based internally: pymodbus adds 1 on every access.
                if device.getValues(3, SOC, 2) == [50, 5280]:  # type: ignore[no-untyped-call]
                    break
            assert device.getValues(3, HEARTBEAT_IN, 1) == [0]  # type: ignore[no-untyped-call]  # the inverter's register is left alone
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_client_mode_retries_when_the_device_is_absent() -> None:
    hub = SnapshotHub()
    settings = ModbusSettings(mode="client", port=free_port(), client_interval=0.05, client_timeout=0.2)
    async with running_sink(settings, hub) as sink:
        await wait_refresh(sink, timeout=5)
        from bmsgate.inverter.modbus.server import ModbusClientWriter

        assert isinstance(sink.endpoint, ModbusClientWriter)
        assert sink.endpoint.writes == 0

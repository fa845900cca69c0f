"""The Modbus server on the wire: raw MBAP and RTU frames, pipelining, malformed and unserved requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from pathlib import Path

import pytest
import serial

from bmsgate.inverter.modbus import tcp
from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.inverter.modbus.tcp import MAX_CONNECTIONS
from bmsgate.runtime.hub import SnapshotHub

from .helpers import free_port, make_snapshot, modbus_crc, running_sink, wait_refresh

SOC = 0x0100
RTU_SLAVE = 21

# Function codes the map does not serve, each with a well-formed body (so only "not served" can refuse it).
UNSERVED = {
    "report slave id": bytes([0x11]),
    "read device identification": bytes([0x2B, 0x0E, 0x01, 0x00]),
    "read FIFO queue": bytes([0x18, 0x01, 0x00]),
    "read file record": bytes([0x14, 0x07, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01]),
    "diagnostics, return query data": bytes([0x08, 0x00, 0x00, 0x12, 0x34]),
    "read exception status": bytes([0x07]),
    "get comm event counter": bytes([0x0B]),
    "no such function": bytes([0x41]),
    "coils": bytes([0x01, 0x00, 0x00, 0x00, 0x08]),
}


def mbap(tid: int, pdu: bytes, unit: int = 1) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_holding(address: int, count: int) -> bytes:
    return struct.pack(">BHH", 3, address, count)


def tcp_settings() -> ModbusSettings:
    return ModbusSettings.model_validate({"mode": "tcp", "port": free_port()})


def exchange(port: int, *chunks: bytes, expect: int) -> bytes:
    """Send each chunk with one ``sendall`` (a short pause between them), then read `expect` bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index, chunk in enumerate(chunks):
            if index:
                # Wait for the first answer: the server replies while the rest of a frame is still pending.
                sock.settimeout(0.5)
                with contextlib.suppress(TimeoutError):
                    sock.recv(1, socket.MSG_PEEK)
                sock.settimeout(2)
            sock.sendall(chunk)
        answer = b""
        while len(answer) < expect:
            try:
                more = sock.recv(4096)
            except TimeoutError:
                break
            if not more:
                break
            answer += more
        return answer


def split_mbap(stream: bytes) -> list[bytes]:
    frames = []
    while len(stream) >= 6:
        size = 6 + int.from_bytes(stream[4:6], "big")
        frames.append(stream[:size])
        stream = stream[size:]
    assert stream == b"", f"trailing bytes {stream.hex()}"
    return frames


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def test_pipelined_requests_are_all_answered_in_order() -> None:
    hub = SnapshotHub()
    settings = tcp_settings()
    async with running_sink(settings, hub) as sink:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        two = mbap(7, read_holding(SOC, 1)) + mbap(8, read_holding(SOC + 1, 2))
        answer = await asyncio.to_thread(exchange, settings.port, two, expect=11 + 13)
        assert split_mbap(answer) == [
            mbap(7, bytes([3, 2]) + (50).to_bytes(2, "big")),
            mbap(8, bytes([3, 4]) + (5280).to_bytes(2, "big") + (0x10000 - 1230).to_bytes(2, "big")),
        ]
        # Three in one segment, the last of them cut in half: the tail arrives after the first answers.
        three = mbap(1, read_holding(SOC, 1)) + mbap(2, b"\x41") + mbap(3, read_holding(SOC, 1))
        answer = await asyncio.to_thread(exchange, settings.port, three[:-3], three[-3:], expect=11 + 9 + 11)
        assert [frame[:2] for frame in split_mbap(answer)] == [b"\x00\x01", b"\x00\x02", b"\x00\x03"]
        assert split_mbap(answer)[2] == mbap(3, bytes([3, 2]) + (50).to_bytes(2, "big"))


@pytest.mark.parametrize("pdu", UNSERVED.values(), ids=UNSERVED.keys())
async def test_tcp_unserved_function_codes_get_illegal_function(pdu: bytes, caplog: pytest.LogCaptureFixture) -> None:
    settings = tcp_settings()
    async with running_sink(settings, SnapshotHub()):
        answer = await asyncio.to_thread(exchange, settings.port, mbap(0x1234, pdu, unit=5), expect=9)
        # the connection still serves afterwards
        after = await asyncio.to_thread(exchange, settings.port, mbap(9, read_holding(SOC, 1)), expect=11)
    assert answer == mbap(0x1234, bytes([pdu[0] | 0x80, 0x01]), unit=5)
    assert after[:2] == b"\x00\x09"
    assert errors(caplog) == []


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (bytes([0x18]), 0x01),  # not served, and too short to decode
        (bytes([0x03, 0x01]), 0x03),  # served, but the body is cut short: illegal data value
        (bytes([0x10, 0x01, 0x17, 0x00, 0x01, 0x02, 0x00]), 0x03),
    ],
    ids=["fc18 short", "fc03 short", "fc16 short"],
)
async def test_malformed_requests_are_refused_quietly(pdu: bytes, code: int, caplog: pytest.LogCaptureFixture) -> None:
    settings = tcp_settings()
    async with running_sink(settings, SnapshotHub()):
        caplog.clear()
        answer = await asyncio.to_thread(
            exchange, settings.port, mbap(4, pdu) + mbap(5, read_holding(SOC, 1)), expect=9 + 11
        )
        await asyncio.sleep(0.05)  # an unhandled protocol error would be logged by the loop by now
    frames = split_mbap(answer)
    assert frames[0] == mbap(4, bytes([pdu[0] | 0x80, code]))
    assert frames[1][:2] == b"\x00\x05"
    assert errors(caplog) == []


def rtu_exchange(port: Path, frame: bytes, expect: int) -> bytes:
    with serial.Serial(str(port), 9600, timeout=0.3) as line:
        line.reset_input_buffer()
        line.write(frame + modbus_crc(frame))
        return bytes(line.read(expect))


@pytest.mark.parametrize("pdu", UNSERVED.values(), ids=UNSERVED.keys())
async def test_rtu_unserved_function_codes_get_illegal_function(
    pdu: bytes, pty_pair: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server_port, client_port = pty_pair
    settings = ModbusSettings.model_validate(
        {"mode": "rtu", "serial_port": str(server_port), "slave_id": RTU_SLAVE, "register_map": "byd-hvm-fronius"}
    )
    async with running_sink(settings, SnapshotHub()):
        answer = await asyncio.to_thread(rtu_exchange, client_port, bytes([RTU_SLAVE]) + pdu, 16)
        other_slave = await asyncio.to_thread(rtu_exchange, client_port, bytes([RTU_SLAVE + 1]) + pdu, 16)
        served = await asyncio.to_thread(rtu_exchange, client_port, bytes([RTU_SLAVE]) + read_holding(100, 1), 16)
    reply = bytes([RTU_SLAVE, pdu[0] | 0x80, 0x01])
    assert answer == reply + modbus_crc(reply)
    assert other_slave == b""
    assert served[:5] == bytes([RTU_SLAVE, 3, 2, 0x53, 0x49])
    assert errors(caplog) == []


async def test_a_foreign_protocol_id_closes_the_connection() -> None:
    settings = tcp_settings()
    async with running_sink(settings, SnapshotHub()):
        foreign = struct.pack(">HHHB", 1, 7, 6, 1) + read_holding(SOC, 1)
        answer = await asyncio.to_thread(exchange, settings.port, foreign, expect=11)
    assert answer == b""


async def test_at_the_cap_the_connection_idle_longest_makes_room_for_a_new_master() -> None:
    settings = tcp_settings()
    async with running_sink(settings, SnapshotHub()):
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(MAX_CONNECTIONS):  # masters that vanished without closing
                held.append(await asyncio.open_connection("127.0.0.1", settings.port))
                await asyncio.sleep(0.01)  # each accepted in turn: the first is the one idle longest
            reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
            writer.write(mbap(3, read_holding(SOC, 1)))
            answer = await asyncio.wait_for(reader.readexactly(11), 2)
            writer.close()
            assert await asyncio.wait_for(held[0][0].read(1), 2) == b""  # the oldest was dropped
            second_reader, second_writer = held[1]
            second_writer.write(mbap(4, read_holding(SOC, 1)))
            second = await asyncio.wait_for(second_reader.readexactly(11), 2)  # the others still served
        finally:
            for _, each in held:
                each.close()
    assert answer[:2] == b"\x00\x03" and second[:2] == b"\x00\x04"


async def test_a_silent_or_stalled_master_is_closed_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "IDLE_TIMEOUT", 30.0)
    monkeypatch.setattr(tcp, "_IO_TIMEOUT", 0.3)
    settings = tcp_settings()
    async with running_sink(settings, SnapshotHub()):
        # A started frame never finished: the short I/O timeout ends it, not the idle one.
        stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", settings.port)
        stalled.write(mbap(5, read_holding(SOC, 1))[:9])
        assert await asyncio.wait_for(stalled_reader.read(1), 2) == b""
        stalled.close()
        # A master that never sends: the idle timeout ends it.
        monkeypatch.setattr(tcp, "IDLE_TIMEOUT", 0.3)
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", settings.port)
        assert await asyncio.wait_for(silent_reader.read(1), 2) == b""
        silent.close()


async def test_stopping_with_a_master_that_never_reads_neither_hangs_nor_logs_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = tcp_settings()
    hub = SnapshotHub()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    runner = running_sink(settings, hub)
    sink = await runner.__aenter__()
    try:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        sock.connect(("127.0.0.1", settings.port))
        sock.setblocking(False)
        # Pipelined block reads (73-byte answers) that are never read, until the server's answers back up in
        # its own buffer. How much the kernel absorbs first (loopback send buffers are autotuned, up to
        # megabytes) depends on the machine, so requests keep coming until then.
        request = mbap(1, read_holding(SOC, 32))
        server = sink.endpoint
        assert isinstance(server, tcp.ModbusTcpServer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            with contextlib.suppress(BlockingIOError):
                for _ in range(2_000):
                    sock.send(request * 50)
            await asyncio.sleep(0.05)
            writers = [connection.writer for connection in server._connections.values()]
            if writers and max(w.transport.get_write_buffer_size() for w in writers) > 0:
                break  # answers backed up
            assert loop.time() < deadline, "the server's answers never backed up"
        _, idle = await asyncio.open_connection("127.0.0.1", settings.port)  # an ordinary idle master too
    finally:
        # Stopping returns although nobody reads (closing would wait for the backlog to flush).
        await asyncio.wait_for(runner.__aexit__(None, None, None), 5)
    # Nothing is held for the master that stopped reading: its backlog was dropped with the connection.
    assert all(w.transport.is_closing() and w.transport.get_write_buffer_size() == 0 for w in writers)
    sock.close()
    idle.close()
    assert errors(caplog) == []

"""SerialTransport through a real pty pair (socat), with a VirtualBms answering on the far end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bmsgate.errors import ConnectError
from bmsgate.protocols import get_protocol
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import PackConfig, PackModel, VirtualBms
from bmsgate.transports.serial import SerialTransport

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")

JBD = get_protocol("jbd")
OPTIONS = ClientOptions(request_timeout=1.0, retries=1, retry_backoff=0.05, poll_deadline=5.0)


class PtyPair:
    """socat linking two ptys: `bms` (the responder's end) and `host` (the transport's end)."""

    def __init__(self, directory: Path) -> None:
        self.bms = directory / "bms"
        self.host = directory / "host"
        self.process = subprocess.Popen(
            [
                "socat",
                f"pty,raw,echo=0,link={self.bms}",
                f"pty,raw,echo=0,link={self.host}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not (self.bms.exists() and self.host.exists()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    pair = PtyPair(tmp_path)
    try:
        yield pair
    finally:
        pair.stop()


class Responder:
    """The BMS end: reads requests from the pty and writes VirtualBms replies in small chunks."""

    def __init__(self, path: Path) -> None:
        self.bms = VirtualBms(JBD, PackModel(PackConfig(cells=8, ntc_count=2, capacity=50)))
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.requests: list[bytes] = []
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 256)
        except OSError:
            self.close()
            return
        self.requests.append(data)
        for reply in self.bms.handle_write(data):
            for start in range(0, len(reply), 9):  # odd chunking on purpose
                os.write(self.fd, reply[start : start + 9])

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
async def responder(ptys: PtyPair) -> AsyncIterator[Responder]:
    bms = Responder(ptys.bms)
    try:
        yield bms
    finally:
        bms.close()


async def test_full_read_over_a_pty(ptys: PtyPair, responder: Responder) -> None:
    transport = SerialTransport(str(ptys.host), JBD)
    assert transport.description.endswith("@9600/8N1")
    async with BatteryClient(JBD, transport, battery_id="wired", options=OPTIONS) as client:
        snapshot = await client.read()
        again = await client.read()
    assert snapshot.cell_count == 8
    assert snapshot.full_capacity == pytest.approx(50)
    assert again.cell_count == 8
    assert responder.requests
    assert not transport.is_open


async def test_port_disappears_mid_run(ptys: PtyPair, responder: Responder) -> None:
    transport = SerialTransport(str(ptys.host), JBD)
    client = BatteryClient(JBD, transport, options=OPTIONS)
    await client.connect()
    await client.read()
    responder.close()
    ptys.stop()
    # The loop notices the vanished pty by itself (read error), before anyone writes.
    async with asyncio.timeout(3):
        while transport.is_open:
            await asyncio.sleep(0.01)
    with pytest.raises(ConnectError, match=r"the port went away|cannot open the port"):
        await client.read()
    await client.close()


async def test_missing_port_is_a_clear_connect_error(tmp_path: Path) -> None:
    transport = SerialTransport(str(tmp_path / "ttyUSB9"), JBD)
    with pytest.raises(ConnectError, match=r"cannot open the port.*plugged in"):
        await transport.open()
    assert not transport.is_open


def test_line_settings_come_from_the_definition_and_can_be_overridden() -> None:
    assert SerialTransport("/dev/null", JBD).settings.baudrate == 9600
    custom = SerialTransport("/dev/null", JBD, baudrate=115200, parity="E", stopbits=2)
    assert custom.description == "serial:/dev/null@115200/8E2"
    assert SerialTransport("/dev/null").settings.bytesize == 8


async def test_close_is_idempotent(ptys: PtyPair) -> None:
    transport = SerialTransport(str(ptys.host), JBD)
    await transport.open()
    await transport.close()
    await transport.close()
    with contextlib.suppress(ConnectError):
        await transport.write(b"\x00")

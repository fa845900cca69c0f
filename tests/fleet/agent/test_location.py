"""Location sources for real: gpsd (fed by gpsfake and by a TCP NMEA source the test moves), an NMEA
receiver on a serial port (a socat pty pair), GPS lost reported as lost."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bmsgate.fleet.agent.agent import FleetAgent
from bmsgate.fleet.agent.location import GpsdLocation, NmeaSerialLocation, location_from_tpv
from bmsgate.fleet.protocol import Channel, EventKind, Location, LocationFix, StateMessage
from bmsgate.mqtt.broker import free_port
from bmsgate.runtime.hub import SnapshotHub
from tests.fleet.agent.conftest import FleetBroker, Recorder, agent_options, running
from tests.fleet.agent.test_nmea import sentence

GPSD = shutil.which("gpsd") or ("/usr/sbin/gpsd" if Path("/usr/sbin/gpsd").exists() else None)
GPSFAKE = shutil.which("gpsfake")
TIMEOUT = 10.0


def _nmea_minutes(value: float, degree_digits: int) -> tuple[str, bool]:
    negative = value < 0
    value = abs(value)
    degrees = int(value)
    return f"{degrees:0{degree_digits}d}{(value - degrees) * 60:07.4f}", negative


def position_sentences(lat: float | None, lon: float | None) -> bytes:
    """GGA + RMC for a position now (None: the receiver has no fix)."""
    now = time.gmtime()
    clock, date = time.strftime("%H%M%S", now), time.strftime("%d%m%y", now)
    if lat is None or lon is None:
        gga = sentence(f"GPGGA,{clock}.00,,,,,0,00,99.9,,M,,M,,")
        rmc = sentence(f"GPRMC,{clock}.00,V,,,,,,,{date},,,N")
    else:
        lat_text, south = _nmea_minutes(lat, 2)
        lon_text, west = _nmea_minutes(lon, 3)
        where = f"{lat_text},{'S' if south else 'N'},{lon_text},{'W' if west else 'E'}"
        gga = sentence(f"GPGGA,{clock}.00,{where},1,08,0.9,12.0,M,30.0,M,,")
        rmc = sentence(f"GPRMC,{clock}.00,A,{where},0.0,0.0,{date},,,A")
    return f"{gga}\r\n{rmc}\r\n".encode()


class MovingReceiver:
    """A TCP NMEA source (a GPS receiver on the network) whose position the test sets."""

    def __init__(self) -> None:
        self.lat: float | None = -33.9187
        self.lon: float | None = 18.425
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _client(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                writer.write(position_sentences(self.lat, self.lon))
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def __aenter__(self) -> MovingReceiver:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail("gpsd exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("gpsd did not listen")
            time.sleep(0.05)


@contextlib.contextmanager
def _process(args: list[str], port: int) -> Iterator[int]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def _collecting(source: GpsdLocation | NmeaSerialLocation) -> AsyncIterator[list[Location]]:
    seen: list[Location] = []
    task = asyncio.create_task(source.run(seen.append))
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(predicate: object, timeout: float = TIMEOUT) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


@pytest.mark.skipif(GPSFAKE is None, reason="gpsfake (gpsd-clients) is not installed")
async def test_gpsd_fed_by_gpsfake_gives_the_logged_position(tmp_path: Path) -> None:
    log = tmp_path / "site.nmea"
    log.write_bytes(position_sentences(-25.7461, 28.1881) * 3)
    port = free_port()
    assert GPSFAKE is not None
    with _process([GPSFAKE, "-q", "-n", "-P", str(port), "-c", "0.2", str(log)], port):
        async with _collecting(GpsdLocation("127.0.0.1", port, lost_after=5)) as seen:
            # The first TPV may come from a GGA alone (no date, so no time); RMC's date follows.
            await _until(lambda: any(location.time is not None for location in seen), timeout=15)
    fixed = next(location for location in seen if location.time is not None)
    assert fixed.source == "gpsd"
    assert fixed.lat == pytest.approx(-25.7461, abs=1e-4)
    assert fixed.lon == pytest.approx(28.1881, abs=1e-4)
    assert fixed.time is not None


@pytest.mark.slow
@pytest.mark.skipif(GPSD is None, reason="gpsd is not installed")
async def test_a_moving_site_and_a_lost_fix_through_gpsd_reach_the_server(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    assert GPSD is not None
    async with MovingReceiver() as receiver:
        port = free_port()
        with _process([GPSD, "-N", "-n", "-S", str(port), f"tcp://127.0.0.1:{receiver.port}"], port):
            source = GpsdLocation("127.0.0.1", port, lost_after=1.5, reconnect_max=0.5)
            agent = FleetAgent(agent_options(fleet_broker, tmp_path), location=source)

            def located(lat: float) -> bool:
                states = recorder.of(Channel.STATE, "gw-1")
                location = states[-1].location if states else None
                return location is not None and location.lat is not None and abs(location.lat - lat) < 1e-4

            async with running(agent, SnapshotHub()):
                await recorder.wait_for(lambda: located(-33.9187), timeout=15)
                receiver.lat, receiver.lon = -29.8587, 31.0218  # the site moved (Durban)
                await recorder.wait_for(lambda: located(-29.8587), timeout=15)
                receiver.lat = receiver.lon = None  # the antenna lost the sky
                await recorder.wait_for(
                    lambda: [e for e in recorder.of(Channel.EVENT, "gw-1") if e.kind is EventKind.LOCATION_LOST]
                )
                await recorder.wait_for(
                    lambda: (
                        (state := recorder.of(Channel.STATE, "gw-1")[-1]).location is not None
                        and state.location.fix is LocationFix.NONE
                    )
                )
    last = recorder.of(Channel.STATE, "gw-1")[-1]
    assert isinstance(last, StateMessage)
    assert last.location is not None
    assert (last.location.lat, last.location.lon) == (None, None), "a lost fix is not a stale position"


async def test_gpsd_away_is_gps_lost() -> None:
    port = free_port()  # nobody listens
    async with _collecting(GpsdLocation("127.0.0.1", port, lost_after=1, reconnect_max=0.2)) as seen:
        await _until(lambda: seen)
    assert seen[0].fix is LocationFix.NONE


def test_tpv_reports_without_a_usable_position_are_no_fix() -> None:
    assert location_from_tpv({"class": "TPV", "mode": 1}).fix is LocationFix.NONE
    assert location_from_tpv({"class": "TPV", "mode": 3, "lat": 95.0, "lon": 10.0}).fix is LocationFix.NONE
    assert location_from_tpv({"class": "TPV", "mode": 2, "lat": "x", "lon": 10.0}).fix is LocationFix.NONE
    two_d = location_from_tpv({"class": "TPV", "mode": 2, "lat": 1.5, "lon": 2.5, "alt": 100.0, "time": "bad"})
    assert (two_d.fix, two_d.alt_m, two_d.time) == (LocationFix.FIX_2D, None, None)


async def test_an_nmea_receiver_on_a_serial_port(pty_pair: tuple[Path, Path]) -> None:
    pytest.importorskip("serial_asyncio_fast")
    gateway_side, receiver_side = pty_pair
    source = NmeaSerialLocation(str(gateway_side), baudrate=9600, lost_after=1.0)
    with receiver_side.open("wb", buffering=0) as wire:
        async with _collecting(source) as seen:
            await asyncio.sleep(0.3)
            wire.write(b"\x00garbage\r\n$GPGGA,bad*00\r\n")
            wire.write(position_sentences(-33.9187, 18.425))
            await _until(lambda: any(location.fix is LocationFix.FIX_3D for location in seen))
            # Then silence: after lost_after the fix is reported lost, not kept.
            await _until(lambda: seen[-1].fix is LocationFix.NONE, timeout=5)
    fixed = next(location for location in seen if location.fix is LocationFix.FIX_3D)
    assert (fixed.source, round(fixed.lat or 0, 4), fixed.alt_m) == ("nmea", -33.9187, 12.0)
    assert source.rejected == 2


async def test_a_hostile_gpsd_cannot_grow_memory_and_is_gps_lost() -> None:
    connections = 0

    async def flood(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            writer.write(b'{"class":"VERSION"}\n' + b"x" * 200_000)  # a line far beyond any gpsd report
            await writer.drain()
            await asyncio.sleep(5)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _collecting(GpsdLocation("127.0.0.1", port, lost_after=5, reconnect_max=0.2)) as seen:
            await _until(lambda: connections >= 2 and seen, timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    assert all(location.fix is LocationFix.NONE for location in seen)

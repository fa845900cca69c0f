"""A gateway's link to the fleet goes down for a minute: the server's history has no gap afterwards.

The real pieces: the fleet server (own Mosquitto with TLS and ACLs, ingest, SQLite), a simulated gateway with
the real agent and its on-disk buffer. Between them a TCP relay that the test cuts, as a dropped mobile
link would: the gateway cannot reach the broker, buffers, and backfills when the link returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from pathlib import Path

import pytest

from bmsgate.fleet.agent.simulated import SimulatedSite, build_site
from bmsgate.fleet.server.broker import apply_device_changes
from bmsgate.fleet.server.devices import enroll_gateway
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.fleet.server.store.repository import Resolution
from bmsgate.mqtt.broker import find_mosquitto, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]

OUTAGE_S = float(os.environ.get("BMSGATE_TEST_OUTAGE_S", "60"))
INTERVAL_S = 1.0


class Link:
    """A TCP relay to the broker that can be cut: open connections dropped, the port closed (connections refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.up = True

    async def cut(self) -> None:
        self.up = False
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        finally:
            self._writers -= {writer, upstream_writer}

    async def close(self) -> None:
        await self.cut()


async def test_a_minute_without_the_broker_leaves_no_gap_in_the_servers_history(tmp_path: Path) -> None:
    gateway_port = free_port()
    settings = FleetServerSettings(
        data_dir=tmp_path / "fleet", http_port=0, gateway_port=gateway_port, cert_port=None, public_host="localhost"
    )
    async with FleetServer(settings) as running:
        link = Link(gateway_port)
        await link.start()
        credentials = enroll_gateway(running.data, "outage-site", broker_url=f"mqtts://localhost:{link.port}")
        await apply_device_changes(running.data)
        site = SimulatedSite(gateway_id="outage-site", name="Upington 1", lat=-28.45, lon=21.26, packs=1, cells=8)
        supervisor, _agent = build_site(site, credentials, tmp_path / "gw", interval=INTERVAL_S, poll_interval=0.5)
        gateway = asyncio.create_task(supervisor.run())
        store = running.store
        try:

            async def samples() -> list[float]:
                series = await store.series("outage-site", "pack1", "voltage", 0, time.time() + 60, Resolution.RAW)
                return [point.at for point in series.points]

            async def until(check: object, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while not await check():  # type: ignore[operator]
                    assert time.monotonic() < deadline, "not in time"
                    await asyncio.sleep(0.25)

            async def some() -> bool:
                return len(await samples()) >= 3

            await until(some, 30)
            cut_at = time.time()
            await link.cut()
            await asyncio.sleep(OUTAGE_S)
            back_at = time.time()
            await link.start()

            async def caught_up() -> bool:
                # Live data flows first after the link returns; the backlog follows at a bounded rate.
                stamps = await samples()
                filled = all(later - earlier < 3 * INTERVAL_S for earlier, later in itertools.pairwise(stamps))
                return bool(stamps) and stamps[-1] > back_at + 3 * INTERVAL_S and filled

            await until(caught_up, 60 + OUTAGE_S)
        finally:
            gateway.cancel()
            await asyncio.gather(gateway, return_exceptions=True)
            await link.close()
        stamps = await samples()
        during = [at for at in stamps if cut_at < at < back_at]
        assert len(during) >= OUTAGE_S / INTERVAL_S * 0.8, f"only {len(during)} samples from the outage"
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        worst = max(range(len(gaps)), key=gaps.__getitem__)
        where = f"after {stamps[worst] - cut_at:+.1f} s from the cut (outage {back_at - cut_at:.1f} s)"
        assert gaps[worst] < 3 * INTERVAL_S, f"a gap of {gaps[worst]:.1f} s in the server's history, {where}"
        assert len(stamps) == len(set(stamps))  # each sample once
        assert running.ingest.counters.samples_written >= len(stamps)

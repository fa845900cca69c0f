"""The whole fleet for real: `fleet serve`'s composition (own Mosquitto with TLS and ACLs, SQLite, ingest,
alarms, HTTP API) and a simulated gateway running the real agent, enrolled like a user would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bmsgate.fleet.agent.simulated import SimulatedSite, build_site
from bmsgate.fleet.server.broker import apply_device_changes
from bmsgate.fleet.server.devices import enroll_gateway
from bmsgate.fleet.server.service import FleetServer, FleetServerSettings
from bmsgate.mqtt.broker import find_mosquitto, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]


async def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_a_gateway_shows_up_with_its_batteries_location_and_versions(tmp_path: Path) -> None:
    gateway_port = free_port()
    settings = FleetServerSettings(
        data_dir=tmp_path / "fleet", http_port=0, gateway_port=gateway_port, cert_port=None, public_host="localhost"
    )
    async with FleetServer(settings) as running:
        assert running.admin_token
        credentials = enroll_gateway(running.data, "e2e-site", broker_url=f"mqtts://localhost:{gateway_port}")
        assert await apply_device_changes(running.data)
        site = SimulatedSite(gateway_id="e2e-site", name="Cape Town 1", lat=-33.92, lon=18.42, packs=2, cells=8)
        supervisor, _agent = build_site(site, credentials, tmp_path / "gw", interval=0.5, poll_interval=0.2)
        gateway_task = asyncio.create_task(supervisor.run())
        headers = {"Authorization": f"Bearer {running.admin_token}"}
        try:
            async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=10) as client:

                async def listed() -> dict[str, Any] | None:
                    rows = (await client.get("/api/v1/gateways")).json()["gateways"]
                    for row in rows:
                        batteries = row["batteries"]
                        if row["id"] == "e2e-site" and row["online"] and len(batteries) == 2 and all(batteries):
                            return dict(row)
                    return None

                row = await _until(listed)
                assert row["location"]["lat"] == pytest.approx(-33.92)
                assert row["software_version"]
                assert any(pack["kind"] == "protocol" and pack["name"] == "jbd" for pack in row["packs"])
                assert (
                    await client.get("/api/v1/gateways", headers={"Authorization": "Bearer wrong"})
                ).status_code == 401
                assert running.ingest.counters.samples_written > 0
                assert not running.ingest.counters.rejected
        finally:
            gateway_task.cancel()
            await asyncio.gather(gateway_task, return_exceptions=True)
        assert not running.failure.done()

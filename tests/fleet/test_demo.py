"""The fleet demo: a local server and simulated sites over South Africa, listed by the API within seconds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from bmsgate.fleet.credentials import read_credentials
from bmsgate.fleet.demo import FleetDemo, FleetDemoOptions
from bmsgate.mqtt.broker import find_mosquitto

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]


async def test_demo_sites_appear_on_the_api(tmp_path: Path) -> None:
    options = FleetDemoOptions(gateways=3, http_port=0, data_dir=tmp_path / "fleet", interval=0.5)
    async with FleetDemo(options) as demo:
        assert demo.admin_token
        assert demo.url in demo.banner()
        credentials = read_credentials(demo.enroll_to_file("demo-gateway"))
        assert credentials.gateway == "demo-gateway"
        sites = asyncio.create_task(demo.run_sites())
        try:
            headers = {"Authorization": f"Bearer {demo.admin_token}"}
            async with httpx.AsyncClient(base_url=demo.url, headers=headers, timeout=10) as client:
                deadline = time.monotonic() + 40
                while True:
                    rows = (await client.get("/api/v1/gateways")).json()["gateways"]
                    online = {row["id"] for row in rows if row["online"] and row["batteries"]}
                    if {site.gateway_id for site in demo.sites} <= online:
                        break
                    assert time.monotonic() < deadline, f"online so far: {sorted(online)}"
                    await asyncio.sleep(0.3)
            for row in rows:
                assert -35 < row["location"]["lat"] < -22
        finally:
            sites.cancel()
            await asyncio.gather(sites, return_exceptions=True)

"""The demo end to end: simulated batteries, outputs on localhost, exits by itself with status 0."""

from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from bmsgate.config import config_from_mapping
from bmsgate.demo import demo_config
from bmsgate.gateway import build_gateway, run_gateway
from bmsgate.sinks.console import ConsoleSink


def test_demo_runs_end_to_end_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bmsgate.cli", "demo", "--duration", "5", "--plain", "--poll-interval", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for battery in ("house", "garage", "shed", "camper"):
        assert f" {battery} " in result.stdout


async def test_live_view_renders_every_battery() -> None:
    config = config_from_mapping(demo_config(poll_interval=0.2, time_scale=60))
    console = Console(record=True, width=160, force_terminal=True)
    gateway = build_gateway(config, console=console)
    await run_gateway(gateway, duration=1.5)
    sink = next(sink for sink in gateway.supervisor.sinks if isinstance(sink, ConsoleSink))
    console.print(sink.render(gateway.hub))
    text = console.export_text()
    for name in ("House bank", "Garage rack", "Shed battery", "Camper"):
        assert name in text
    assert "link 100 %" in text
    assert "RSSI" in text
    assert "24 " in text  # the camper's 24th cell bar


async def test_drifting_cell_and_fault_develop() -> None:
    data = demo_config(poll_interval=0.2, time_scale=600)
    shed = next(battery for battery in data["batteries"] if battery["id"] == "shed")
    shed["transport"]["fault_after"] = 300  # simulated seconds: half a real second here
    config = config_from_mapping(data)
    gateway = build_gateway(config, console=Console(file=io.StringIO()))
    await run_gateway(gateway, duration=4.0)
    house = gateway.hub.latest("house")
    shed = gateway.hub.latest("shed")
    assert house is not None and shed is not None
    assert house.cell_delta is not None and house.cell_delta > 0.005
    assert house.cell_min is not None and house.cell_min.cell == 7
    assert shed.alarms, "the shed battery should have developed its over-temperature fault"

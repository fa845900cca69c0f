"""The demo's simulated inverter, and the demo's CAN wiring (inverter seen, unwritable --can-log)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bmsgate.app.config import config_from_mapping
from bmsgate.app.demo import DemoOptions, demo_config, demo_sink_builders
from bmsgate.app.gateway import build_gateway, run_gateway
from bmsgate.errors import ConfigError
from bmsgate.inverter.can.profiles import load_profile
from bmsgate.inverter.can.settings import CanSettings
from bmsgate.inverter.can.simulated import SimulatedInverter
from bmsgate.inverter.can.sink import CanSink
from bmsgate.runtime.hub import SnapshotHub

from .helpers import InverterSimulator, channel_name, wait_for


@pytest.mark.parametrize(("profile", "frame_id"), [("pylon", 0x305), ("sma", 0x305), ("growatt-lv", 0x301)])
async def test_simulated_inverter_sends_the_profiles_liveness_frame(profile: str, frame_id: int) -> None:
    channel = channel_name()
    # The test's listener on the bus (it sends nothing itself).
    listener = InverterSimulator(channel, load_profile(profile))
    inverter = SimulatedInverter(CanSettings(interface="virtual", channel=channel, profile=profile), period=0.05)
    assert inverter.name == "can-inverter" and inverter.frame_id == frame_id
    try:
        task = asyncio.create_task(inverter.run(SnapshotHub()))
        try:
            await wait_for(lambda: listener.count(frame_id) >= 3)
            listener.send(0x351, bytes(6))  # the battery side: drained and counted, never piling up
            await wait_for(lambda: inverter.frames_received >= 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert listener.latest_raw[frame_id] == bytes(8)
        assert inverter.frames_sent >= 3
    finally:
        listener.close()


def test_simulated_inverter_never_runs_on_a_real_bus() -> None:
    with pytest.raises(ValueError, match="virtual"):
        SimulatedInverter(CanSettings(interface="socketcan", channel="can0"))
    with pytest.raises(ValueError, match="period"):
        SimulatedInverter(CanSettings(interface="virtual", channel="x"), period=0.0)


@pytest.mark.parametrize("profile", ["pylon", "growatt-lv"])
async def test_demo_can_output_sees_the_simulated_inverter(profile: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bmsgate")
    # The fleet is not what this test is about (and a demo stopped while its fleet server starts leaks the
    # dashboard socket: reported to the fleet side).
    options = DemoOptions(mqtt=None, modbus_tcp=None, fleet_sites=None, can_profile=profile)
    config = config_from_mapping(demo_config(poll_interval=0.3, time_scale=60))
    gateway = build_gateway(config, console=Console(file=io.StringIO()), sink_builders=demo_sink_builders(options))
    sinks = gateway.supervisor.sinks
    assert any(isinstance(sink, SimulatedInverter) for sink in sinks)
    can_sink = next(sink for sink in sinks if isinstance(sink, CanSink))
    running = asyncio.create_task(run_gateway(gateway, duration=30))
    try:
        # Growatt only answers requests: the simulated inverter asks. Wait on the condition, not a clock.
        await wait_for(lambda: can_sink.inverter_present is True and can_sink.frame_sets >= 1, timeout=15.0)
    finally:
        gateway.supervisor.request_stop()
        await running
    assert can_sink.inverter_present is True
    messages = [record.message for record in caplog.records]
    assert any(message.startswith("inverter seen: CAN frame") for message in messages)
    assert not any(message.startswith("inverter missing") for message in messages)


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_demo_build_fails_on_an_unwritable_can_log(tmp_path: Path, where: str) -> None:
    log = tmp_path / "nonexistent" / "x.log" if where == "missing-dir" else tmp_path
    options = DemoOptions(mqtt=None, modbus_tcp=None, can_log=str(log))
    config = config_from_mapping(demo_config(poll_interval=0.3))
    with pytest.raises(ConfigError, match=r"outputs\.can\.log_file") as error:
        build_gateway(config, console=Console(file=io.StringIO()), sink_builders=demo_sink_builders(options))
    assert str(log) in str(error.value)


def test_demo_cli_exits_non_zero_on_an_unwritable_can_log(tmp_path: Path) -> None:
    log = tmp_path / "nonexistent" / "x.log"
    command = [
        sys.executable,
        "-m",
        "bmsgate.app.cli.main",
        "demo",
        "--duration",
        "5",
        "--plain",
        "--no-mqtt",
        "--no-modbus",
        "--no-fleet",
    ]
    result = subprocess.run([*command, "--can-log", str(log)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "outputs.can.log_file" in result.stderr
    assert str(log) in result.stderr and "No such file or directory" in result.stderr

"""The demo end to end: simulated batteries, outputs on localhost, exits by itself with status 0."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from bmsgate.app.config import config_from_mapping
from bmsgate.app.console import ConsoleSink
from bmsgate.app.demo import demo_config
from bmsgate.app.gateway import build_gateway, run_gateway
from bmsgate.mqtt.broker import free_port


def test_demo_runs_end_to_end_and_exits_zero(tmp_path: Path) -> None:
    can_log = tmp_path / "can.log"
    command = [
        sys.executable,
        "-m",
        "bmsgate.app.cli.main",
        "demo",
        "--duration",
        "5",
        "--plain",
        "--poll-interval",
        "0.5",
    ]
    result = subprocess.run(
        [
            *command,
            "--can-log",
            str(can_log),
            "--mqtt-bind",
            f"127.0.0.1:{free_port()}",
            "--modbus-tcp",
            f"127.0.0.1:{free_port()}",
            "--fleet-sites",
            "2",
            "--fleet-http",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for battery in ("house", "garage", "shed", "camper"):
        assert f" {battery} " in result.stdout
    assert re.search(r"fleet dashboard: http://127\.0\.0\.1:\d+/  admin token: [\w-]{40,}", result.stderr)
    # candump log format: (timestamp) interface ID#DATA, the Pylon frame set.
    lines = can_log.read_text().splitlines()
    assert re.fullmatch(r"\(\d+\.\d{6}\) bmsgate-demo 351#[0-9A-F]{12}", lines[0])
    assert {line.split()[2].split("#")[0] for line in lines} >= {"351", "355", "356", "359", "35C", "35E"}


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
    garage = next(battery for battery in data["batteries"] if battery["id"] == "garage")
    garage["transport"]["fault_after"] = 300  # simulated seconds: half a real second here
    config = config_from_mapping(data)
    gateway = build_gateway(config, console=Console(file=io.StringIO()))
    await run_gateway(gateway, duration=4.0)
    house = gateway.hub.latest("house")
    garage = gateway.hub.latest("garage")
    assert house is not None and garage is not None
    assert house.cell_delta is not None and house.cell_delta > 0.005
    assert house.cell_min is not None and house.cell_min.cell == 7
    assert garage.alarms, "the garage battery should have developed its over-temperature fault"
    assert garage.charge_enabled is False


async def test_demo_outputs_run_on_localhost() -> None:
    """The demo's embedded MQTT broker carries HA discovery and states; Modbus TCP serves the bank."""
    import aiomqtt
    from pymodbus.client import AsyncModbusTcpClient

    from bmsgate.app.demo import DemoOptions, demo_sink_builders

    mqtt_port, modbus_port = free_port(), free_port()
    fleet_port = free_port()
    options = DemoOptions(
        mqtt="",
        mqtt_bind=f"127.0.0.1:{mqtt_port}",
        modbus_tcp=f"127.0.0.1:{modbus_port}",
        fleet_sites=2,
        fleet_http=f"127.0.0.1:{fleet_port}",
    )
    config = config_from_mapping(demo_config(poll_interval=0.3, time_scale=60))
    gateway = build_gateway(config, console=Console(file=io.StringIO()), sink_builders=demo_sink_builders(options))
    configs: dict[str, bytes] = {}
    soc_register: list[int] = []
    health: list[int] = []

    async def check() -> None:
        await asyncio.sleep(2.5)
        async with aiomqtt.Client("127.0.0.1", mqtt_port) as client:
            await client.subscribe("homeassistant/#")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.5):
                    async for message in client.messages:
                        configs[str(message.topic)] = bytes(message.payload)
        modbus = AsyncModbusTcpClient("127.0.0.1", port=modbus_port)
        await modbus.connect()
        try:
            reply = await modbus.read_holding_registers(0x0100, count=3, slave=1)
            soc_register.extend(reply.registers)
        finally:
            modbus.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fleet_port}", timeout=5) as client:
            health.append((await client.get("/api/v1/health")).status_code)
        gateway.supervisor.request_stop()

    async with asyncio.TaskGroup() as group:
        group.create_task(check())
        group.create_task(run_gateway(gateway, duration=20))
    cell_configs = [
        topic for topic in configs if re.fullmatch(r"homeassistant/sensor/\w+/house_cell_\d\d/config", topic)
    ]
    assert len(cell_configs) == 16
    discovery = json.loads(configs[cell_configs[0]])
    assert discovery["device_class"] == "voltage"
    assert discovery["default_entity_id"].startswith("sensor.bms_house_cell_")
    assert 0 < soc_register[0] <= 100  # generic map: 0x0100 = bank SoC in %
    assert 50_00 < soc_register[1] < 56_00  # 0x0101: the 48 V bank (house + garage) in 0.01 V
    assert health == [200]  # the fleet dashboard's server answers


@contextlib.contextmanager
def _port_5020_taken() -> Iterator[None]:
    """Port 5020 busy for the block (someone else holding it already will do just as well)."""
    with socket.socket() as busy:
        try:
            busy.bind(("127.0.0.1", 5020))
            busy.listen()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        yield


def _demo(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bmsgate.app.cli.main", "demo", "--plain", "--no-mqtt", "--no-fleet", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_demo_moves_modbus_to_a_free_port_when_5020_is_taken() -> None:
    with _port_5020_taken():
        result = _demo("--duration", "1.5", "--poll-interval", "0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    moved = re.search(r"demo: port 5020 is taken; the Modbus TCP server uses (\d+)", result.stderr)
    assert moved, result.stderr[-2000:]
    assert f"demo: Modbus TCP server on 127.0.0.1:{moved[1]} (map generic)" in result.stderr


def test_demo_refuses_a_busy_modbus_port_given_explicitly() -> None:
    with _port_5020_taken():
        result = _demo("--duration", "1.5", "--modbus-tcp", "127.0.0.1:5020")
    assert result.returncode == 2
    assert "bmsgate: error: --modbus-tcp: cannot listen on 127.0.0.1:5020: " in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_amqtt_brokers_state_machine_stays_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("amqtt")
    from bmsgate.mqtt.broker import EmbeddedBroker

    caplog.set_level(logging.DEBUG)
    async with EmbeddedBroker(prefer="amqtt") as broker:
        assert broker.kind == "amqtt"
    assert "amqtt" in {record.name.split(".")[0] for record in caplog.records}
    assert not [record for record in caplog.records if record.name.startswith("transitions")]

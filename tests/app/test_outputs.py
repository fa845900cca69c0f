"""`bmsgate run` wiring of the configured outputs: MQTT (Home Assistant) and Modbus from a config file."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import aiomqtt
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient
from rich.console import Console

from bmsgate.app.config import load_config
from bmsgate.app.gateway import build_gateway, run_gateway
from bmsgate.app.outputs import configured_sink_builders
from bmsgate.errors import ConfigError
from bmsgate.mqtt.broker import EmbeddedBroker, free_port


def _write_config(
    path: Path, mqtt_url: str, modbus_port: int, inverter: dict[str, object] | None = None, **modbus: object
) -> Path:
    data: dict[str, object] = {
        "state_dir": str(path.parent / "state"),
        "batteries": [
            {"id": "rack", "protocol": "jbd", "poll_interval": 0.3, "transport": {"type": "simulator", "cells": 8}},
            {"id": "wall", "protocol": "jbd", "poll_interval": 0.3, "transport": {"type": "simulator", "cells": 4}},
        ],
        "outputs": {
            "console": {"enabled": False},
            "mqtt": {"url": mqtt_url, "base_topic": "bmsgate-test"},
            "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": modbus_port, **modbus},
        },
    }
    if inverter is not None:
        data["inverter"] = inverter
    path.write_text(yaml.safe_dump(data))
    return path


async def test_configured_outputs_publish_and_serve(tmp_path: Path) -> None:
    modbus_port = free_port()
    async with EmbeddedBroker(port=free_port()) as broker:
        config = load_config(_write_config(tmp_path / "config.yaml", broker.url, modbus_port))
        gateway = build_gateway(config, sink_builders=configured_sink_builders(), console=Console(file=io.StringIO()))
        states: dict[str, bytes] = {}
        registers: list[int] = []

        async def check() -> None:
            await asyncio.sleep(2.0)
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                await client.subscribe("bmsgate-test/#")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        async for message in client.messages:
                            states[str(message.topic)] = bytes(message.payload)
            modbus = AsyncModbusTcpClient("127.0.0.1", port=modbus_port)
            await modbus.connect()
            try:
                registers.extend((await modbus.read_holding_registers(0x0100, count=2, slave=1)).registers)
            finally:
                modbus.close()
            gateway.supervisor.request_stop()

        async with asyncio.TaskGroup() as group:
            group.create_task(check())
            group.create_task(run_gateway(gateway, duration=20))
    state_topics = [topic for topic in states if topic.endswith("/state")]
    assert {"rack", "wall"} <= {topic.split("/")[-2] for topic in state_topics}
    rack_state = json.loads(next(states[topic] for topic in state_topics if "/rack/" in topic))
    assert sorted(key for key in rack_state if key.startswith("cell_") and key[5:].isdigit()) == [
        f"cell_{number:02d}" for number in range(1, 9)
    ]
    # The Modbus output's limits, bank state and limitation reason reach Home Assistant too.
    inverter = json.loads(states["bmsgate-test/inverter/state"])
    assert inverter["state"] in {"ok", "degraded"}
    assert inverter["limits"]["charge_current"] >= 0
    assert inverter["reason"]
    assert 0 < registers[0] <= 100
    # Two packs in the bank: voltage is their mean, between a 4S and an 8S pack.
    assert 13 * 100 < registers[1] < 27 * 100


async def test_a_bank_with_an_unknown_battery_is_a_config_error(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "c.yaml", "mqtt://127.0.0.1:1", free_port(), inverter={"batteries": ["nope"]})
    with pytest.raises(ConfigError, match=r"inverter\.batteries: unknown battery ids \['nope'\]"):
        build_gateway(load_config(path), sink_builders=configured_sink_builders())


@pytest.mark.parametrize("key", ["batteries", "limits", "refresh_interval", "soc_extreme_band"])
def test_the_bank_keys_of_an_output_say_where_they_moved(tmp_path: Path, key: str) -> None:
    value: object = {"max_charge_current": 50} if key == "limits" else (["rack"] if key == "batteries" else 1.0)
    path = _write_config(tmp_path / "c.yaml", "mqtt://127.0.0.1:1", free_port(), None, **{key: value})
    with pytest.raises(ConfigError, match=rf"outputs\.modbus\.{key}: moved to inverter\.{key}") as error:
        load_config(path)
    assert error.value.key_path == f"outputs.modbus.{key}"


async def test_configured_can_output_writes_the_audit_log(tmp_path: Path) -> None:
    log = tmp_path / "can.log"
    data = {
        "batteries": [
            {"id": "rack", "protocol": "jbd", "poll_interval": 0.2, "transport": {"type": "simulator", "cells": 16}}
        ],
        "outputs": {
            "console": {"enabled": False},
            "can": {"interface": "virtual", "channel": "bmsgate-test", "profile": "solark", "log_file": str(log)},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    gateway = build_gateway(load_config(path), sink_builders=configured_sink_builders())
    await run_gateway(gateway, duration=2.5)
    ids = {line.split()[2].split("#")[0] for line in log.read_text().splitlines()}
    assert {"351", "355", "356", "359", "35C", "35E", "379"} <= ids  # Sol-Ark adds 0x379


def test_one_controller_serves_every_inverter_output(tmp_path: Path) -> None:
    from bmsgate.app.outputs import OUTPUTS, build_outputs
    from bmsgate.inverter.can.settings import CanSettings
    from bmsgate.inverter.can.sink import CanSink
    from bmsgate.inverter.controller import InverterController
    from bmsgate.inverter.modbus.settings import ModbusSettings
    from bmsgate.inverter.modbus.sink import ModbusSink
    from bmsgate.inverter.rs485.settings import Rs485Settings
    from bmsgate.inverter.rs485.sink import Rs485Sink

    config = load_config(_write_config(tmp_path / "c.yaml", "mqtt://127.0.0.1:1", free_port()))
    gateway = build_gateway(config, console=Console(file=io.StringIO()))
    sections = {
        "modbus": ModbusSettings(mode="tcp", port=free_port()),
        "can": CanSettings(interface="virtual", channel="bmsgate-test-wiring"),
        "rs485": Rs485Settings(port="/dev/ttyUSB9"),
    }
    sinks = build_outputs(sections, config, gateway.supervisor, gateway.protocols).sinks
    controllers = [sink for sink in sinks if isinstance(sink, InverterController)]
    assert len(controllers) == 1
    assert controllers[0].settings.batteries == ("rack", "wall")  # default bank: every battery
    modbus = next(sink for sink in sinks if isinstance(sink, ModbusSink))
    can = next(sink for sink in sinks if isinstance(sink, CanSink))
    rs485 = next(sink for sink in sinks if isinstance(sink, Rs485Sink))
    assert modbus.controller is can.controller is rs485.controller is controllers[0]
    # Without an inverter output there is no controller at all.
    assert build_outputs({"modbus": None}, config, gateway.supervisor, gateway.protocols).sinks == []
    assert [row.section for row in OUTPUTS if row.inverter] == ["modbus", "can", "rs485"]
    with pytest.raises(ConfigError, match="unknown outputs"):
        build_outputs({"telepathy": object()}, config, gateway.supervisor, gateway.protocols)

"""`bmsgate run` imports only what a gateway needs: the memory it saves cannot come back unnoticed."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from bmsgate.app.cli.main import COMMAND_MODULES, OWN_COMMANDS, command_modules
from bmsgate.mqtt.broker import EmbeddedBroker, free_port

_NEVER_IMPORTED_BY_RUN = (
    "bitstruct",
    "bleak",
    "bmsgate.app.cli.ble",
    "bmsgate.app.cli.fleet",
    "bmsgate.app.cli.fleet_rollout",
    "bmsgate.app.cli.fleet_server",
    "bmsgate.app.cli.fleet_simulate",
    "bmsgate.app.cli.pack",
    "bmsgate.app.demo",
    "bmsgate.app.live_view",
    "bmsgate.app.render",
    "bmsgate.fleet.protocol",
    "bmsgate.fleet.server",
    "bmsgate.inverter.rs485.pylontech",
    "bmsgate.packs",
    "cantools",
    "cryptography",
    "litestar",
    "nats",
    "psycopg",
    "pymodbus",
    "rich",
    "serial",
    "textparser",
    "tuf",
    "uvicorn",
    "yoyo",
)
"""Fleet-server, pack-signing and other commands' libraries, outputs not configured, and rich (the plain
console writes its lines itself; only the live view loads rich); cantools and its parsers (the CAN output
reads DBC files itself, bmsgate.inverter.can.dbc) and pymodbus with pyserial (Modbus TCP is served by our
own server, bmsgate.inverter.modbus.tcp; pymodbus loads only for RTU or client mode).
Each name also covers its submodules."""

_RUNNER = """
import json, sys
from bmsgate.app.cli.main import main
status = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(status)
"""


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _modules_of_run(config: Path, listing: Path) -> subprocess.CompletedProcess[str]:
    search = os.pathsep.join(entry for entry in sys.path if entry)
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(listing), "run", "-c", str(config), "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": search},
        check=False,
    )


async def test_run_with_every_output_imports_no_fleet_server_pack_or_other_command_library(tmp_path: Path) -> None:
    async with EmbeddedBroker(port=free_port()) as broker:
        config = {
            "state_dir": str(tmp_path / "state"),
            "batteries": [
                {"id": f"pack{index}", "protocol": "jbd", "poll_interval": 0.5, "transport": {"type": "simulator"}}
                for index in range(2)
            ],
            "outputs": {
                "console": {"mode": "plain"},
                "mqtt": {"url": broker.url},
                "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": _free_tcp_port()},
                "can": {"interface": "virtual", "channel": "bmsgate-imports-test"},
            },
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        listing = tmp_path / "modules.json"
        result = await asyncio.to_thread(_modules_of_run, path, listing)
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(listing.read_text())
    # The outputs really ran in that process: the listing is of a gateway, not of an early exit.
    assert {"bmsgate.homeassistant.sink", "bmsgate.inverter.modbus.sink", "bmsgate.inverter.can.sink"} <= set(modules)
    unwanted = [
        name for name in modules if any(name == top or name.startswith(f"{top}.") for top in _NEVER_IMPORTED_BY_RUN)
    ]
    assert unwanted == []


def test_each_command_module_adds_exactly_the_commands_the_table_gives_it() -> None:
    for module_name, commands in COMMAND_MODULES.items():
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module_name).add_parsers(subparsers)
        assert tuple(subparsers.choices) == commands, module_name


def test_a_command_line_needs_only_its_command_module_and_help_needs_all() -> None:
    assert command_modules(["--debug", "run", "-c", "gateway.yaml"]) == ("bmsgate.app.cli.gateway",)
    assert command_modules(["fleet", "devices"]) == ("bmsgate.app.cli.fleet",)
    assert command_modules([OWN_COMMANDS[0], "--simulate", "jbd"]) == ()
    assert command_modules(["--help"]) == tuple(COMMAND_MODULES)
    assert command_modules(["no-such-command"]) == tuple(COMMAND_MODULES)
    assert command_modules([]) == tuple(COMMAND_MODULES)

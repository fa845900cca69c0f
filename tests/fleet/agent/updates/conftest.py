"""Fixtures for the update engine: pack files built from the built-in definitions, a running simulated gateway
with a real Modbus TCP server, and a desired state for them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from bmsgate.app.config import GatewayConfig, config_from_mapping
from bmsgate.app.gateway import Gateway, build_gateway
from bmsgate.app.outputs import build_outputs
from bmsgate.catalog import BUILTIN_DIR, set_default_catalog
from bmsgate.fleet.agent.updates.engine import EngineSettings, UpdateEngine, start_committed_slot
from bmsgate.fleet.agent.updates.health import HealthSettings
from bmsgate.fleet.agent.updates.source import UpdateSource
from bmsgate.fleet.agent.wiring import running_site
from bmsgate.fleet.protocol import Channel, topic
from bmsgate.fleet.updates import DesiredState, PackTarget, ReportedState, UpdatePhase, decode_reported
from bmsgate.inverter.modbus.sink import ModbusSink
from bmsgate.inverter.modbus.tcp import ModbusTcpServer
from bmsgate.packs.bundle import build_pack, pack_file_name, pack_sha256
from tests.inverter.modbus.helpers import free_port

GATEWAY = "gw-1"
HARDWARE = "Raspberry Pi 4 Model B Rev 1.4"
SOC_REGISTER = 0x0100


SOC_TIMES_TEN = ("{target: soc, at: 19, type: u8}", "{target: soc, at: 19, type: u8, scale: 10}")
"""A broken JBD edit: 76 % decodes as 760 % (the decoder itself refuses it: every poll fails)."""
VOLTAGE_TIMES_TEN = (
    "{target: voltage, at: 0, type: u16, scale: 0.01}",
    "{target: voltage, at: 0, type: u16, scale: 0.1}",
)
"""A broken JBD edit: the pack voltage ten times the sum of its cells (decodes, but is implausible)."""


def jbd_text(edit: tuple[str, str] | None = None) -> str:
    """The built-in JBD definition, with one edit."""
    text = (BUILTIN_DIR / "protocols" / "jbd.yaml").read_text(encoding="utf-8")
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    return text


def generic_map_text(*, soc_scale: float = 0.1) -> str:
    """The built-in generic register map with the SoC register in other units (0.1 %: 76 % reads 760)."""
    text = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")
    old = "{name: soc, address: 0x0100, source: soc, type: u16, scale: 1, min: 0, max: 100,"
    assert old in text
    return text.replace(
        old, f"{{name: soc, address: 0x0100, source: soc, type: u16, scale: {soc_scale}, min: 0, max: 100,"
    )


@dataclasses.dataclass
class Artifacts:
    """A directory of built pack files (the local source's directory, or what a repository would serve)."""

    directory: Path

    def build(
        self, name: str, version: str, files: dict[str, str], *, hardware: str = '["Raspberry Pi*"]'
    ) -> PackTarget:
        source = self.directory.parent / "sources" / f"{name}-{version}"
        for relative, text in files.items():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            (source / relative).write_text(text, encoding="utf-8")
        (source / "pack.yaml").write_text(
            f'name: {name}\nversion: "{version}"\nhardware: {hardware}\n', encoding="utf-8"
        )
        manifest, data = build_pack(source)
        return self.add(pack_file_name(manifest), data, name=name, version=version)

    def add(self, file_name: str, data: bytes, *, name: str, version: str) -> PackTarget:
        (self.directory / "packs").mkdir(parents=True, exist_ok=True)
        (self.directory / "packs" / file_name).write_bytes(data)
        return PackTarget(
            pack=name, version=version, target=f"packs/{file_name}", length=len(data), sha256=pack_sha256(data)
        )

    def tamper_manifest(self, target: PackTarget, change: Callable[[dict[str, Any]], None]) -> PackTarget:
        """Rewrite a built pack's JSON (a pack no honest build makes) and name it anew."""
        path = self.directory / target.target
        data = json.loads(path.read_bytes())
        change(data)
        return self.add(path.name, json.dumps(data, sort_keys=True).encode(), name=target.pack, version=target.version)


def desired(generation: int, *packs: PackTarget, expires_in: float = 3600.0) -> DesiredState:
    now = time.time()
    return DesiredState(
        v=1, gateway=GATEWAY, generation=generation, issued_at=now, expires_at=now + expires_in, packs=packs
    )


def site_config(
    state_dir: Path, modbus_port: int, *, poll_interval: float = 0.2, transport: dict[str, Any] | None = None
) -> GatewayConfig:
    return config_from_mapping(
        {
            "name": "update bench",
            "state_dir": str(state_dir),
            "batteries": [
                {
                    "id": "house",
                    "protocol": "jbd",
                    "poll_interval": poll_interval,
                    "stale_after": 5.0,
                    "transport": {
                        "type": "simulator",
                        "cells": 16,
                        "initial_soc": 76,
                        "seed": 3,
                        **(transport or {}),
                    },
                }
            ],
            "inverter": {"refresh_interval": 0.1},
            "outputs": {
                "console": {"enabled": False},
                "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": modbus_port},
            },
        },
        source="<test>",
    )


class Reports(list[ReportedState]):
    """What the engine reported, in order."""

    def phases(self) -> list[UpdatePhase]:
        return [report.phase for report in self]

    @property
    def last(self) -> ReportedState:
        return self[-1]


@dataclasses.dataclass
class Bench:
    """A running simulated gateway with its update engine."""

    gateway: Gateway
    engine: UpdateEngine
    modbus: ModbusSink
    client: AsyncModbusTcpClient
    reports: Reports

    async def soc_register(self) -> int:
        response = await self.client.read_holding_registers(SOC_REGISTER, count=1, slave=1)
        assert not response.isError()
        return int(response.registers[0])

    def soc(self) -> float | None:
        snapshot = self.gateway.hub.latest("house")
        return None if snapshot is None else snapshot.soc


def engine_settings(directory: Path, **health: Any) -> EngineSettings:
    return EngineSettings(
        directory=directory,
        gateway_id=GATEWAY,
        hardware=HARDWARE,
        precondition_timeout=health.pop("precondition_timeout", 5.0),
        precondition_interval=0.1,
        health=HealthSettings(**{"polls": 5, "timeout": 10.0, "min_duration": 0.5, **health}),
    )


@contextlib.asynccontextmanager
async def bench(
    state_dir: Path, *, transport: dict[str, Any] | None = None, source: UpdateSource | None = None, **health: Any
) -> AsyncIterator[Bench]:
    """Start the gateway as `run` does: committed slot first, then the definitions, the outputs, the engine."""
    updates = state_dir / "packs"
    start_committed_slot(updates)
    config = site_config(state_dir, free_port(), transport=transport)
    gateway = build_gateway(config)
    assert config.outputs.modbus is not None
    wiring = build_outputs({"modbus": config.outputs.modbus}, config, gateway.supervisor, gateway.protocols)
    gateway.supervisor.sinks.extend(wiring.sinks)
    modbus = next(sink for sink in wiring.sinks if isinstance(sink, ModbusSink))
    controller = wiring.context.controller
    assert controller is not None
    engine = UpdateEngine(
        engine_settings(updates, **health),
        gateway.supervisor,
        running_site(config, controller.settings.batteries),
        source=source,
    )
    task = asyncio.create_task(gateway.supervisor.run())
    client = AsyncModbusTcpClient("127.0.0.1", port=config.outputs.modbus.port, timeout=1, retries=0, reconnect_delay=0)
    try:
        async with asyncio.timeout(10):
            while not gateway.supervisor.running:
                await asyncio.sleep(0.02)
            assert isinstance(modbus.endpoint, ModbusTcpServer)
            await modbus.endpoint.listening.wait()
            assert await client.connect()
            while gateway.hub.latest("house") is None:
                await asyncio.sleep(0.05)
        yield Bench(gateway, engine, modbus, client, Reports())
    finally:
        client.close()
        gateway.supervisor.request_stop()
        await asyncio.wait_for(task, 10)
        set_default_catalog(None)


def reports_of(raw: list[tuple[str, bytes, bool]], gateway: str = GATEWAY) -> list[ReportedState]:
    """The ``reported`` payloads a recorder saw, decoded."""
    name = topic(gateway, Channel.REPORTED)
    return [decode_reported(payload, topic=name, gateway=gateway) for found, payload, _ in raw if found == name]


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)

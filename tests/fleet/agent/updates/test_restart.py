"""A gateway process killed with SIGKILL during an update: on restart it runs a defined slot and reports the truth.

The first process is built from a configuration file as ``bmsgate run`` builds it (committed slot first, then
the definitions, the Modbus server, the fleet agent with the update engine) and installs a pack; the restart
is ``bmsgate run`` itself. Both against a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from bmsgate.fleet.agent.updates.engine import INTERRUPTED
from bmsgate.fleet.agent.updates.journal import read_journal
from bmsgate.fleet.updates import FailureReason, ReportedState, UpdatePhase
from tests.fleet.agent.conftest import FleetBroker, Recorder
from tests.fleet.agent.updates.conftest import (
    GATEWAY,
    SOC_REGISTER,
    Artifacts,
    desired,
    generic_map_text,
    reports_of,
)
from tests.inverter.modbus.helpers import free_port

_PROCESS = Path(__file__).with_name("gateway_process.py")


def _config(tmp_path: Path, credentials: Path, port: int, *, fault: str = "none", waiting_s: float = 1800.0) -> Path:
    config = {
        "name": "kill bench",
        "state_dir": str(tmp_path / "state"),
        "batteries": [
            {
                "id": "house",
                "protocol": "jbd",
                "poll_interval": 0.2,
                "stale_after": 5.0,
                "transport": {
                    "type": "simulator",
                    "cells": 16,
                    "initial_soc": 76,
                    "seed": 3,
                    "fault": fault,
                    "fault_after": 0.0,
                },
            }
        ],
        "inverter": {"refresh_interval": 0.1},
        "outputs": {
            "console": {"enabled": False},
            "modbus": {"mode": "tcp", "host": "127.0.0.1", "port": port},
            "fleet": {
                "credentials": str(credentials),
                "interval": 1.0,
                "reconnect_max": 1.0,
                "updates": {
                    "health_polls": 40,
                    "health_min_duration": 2.0,
                    "health_timeout": 60.0,
                    "precondition_timeout": waiting_s,
                    "precondition_interval": 0.5,
                },
            },
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


@contextlib.contextmanager
def _gateway(config: Path, *install: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The gateway process: with `install`, the test harness that installs; without, ``bmsgate run`` itself."""
    command = (
        [str(_PROCESS), str(config), *map(str, install)] if install else ["-m", "bmsgate", "run", "-c", str(config)]
    )
    process = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE if install else subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        if install:
            assert process.stdout is not None
            with process.stdout:
                assert process.stdout.readline().strip() == b"started"
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def _master(port: int) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    try:
        async with asyncio.timeout(15):
            while not await client.connect():
                await asyncio.sleep(0.2)
        yield client
    finally:
        client.close()


async def _soc_register(client: AsyncModbusTcpClient) -> int:
    async with asyncio.timeout(15):
        while True:
            response = await client.read_holding_registers(SOC_REGISTER, count=1, slave=1)
            if not response.isError() and response.registers[0]:
                return int(response.registers[0])
            await asyncio.sleep(0.2)


def _last(recorder: Recorder) -> ReportedState | None:
    found = reports_of(recorder.raw)
    return found[-1] if found else None


async def _kill_at(recorder: Recorder, process: subprocess.Popen[bytes], phase: UpdatePhase) -> None:
    await recorder.wait_for(lambda: (last := _last(recorder)) is not None and last.phase is phase, timeout=30)
    process.send_signal(signal.SIGKILL)
    process.wait(5)


def _prepare(tmp_path: Path, fleet_broker: FleetBroker, **config: Any) -> tuple[Path, int, Path, Path]:
    artifacts = Artifacts(tmp_path / "usb")
    maps = artifacts.build("site-maps", "2", {"modbus/generic.yaml": generic_map_text(soc_scale=0.1)}, hardware='["*"]')
    wanted = tmp_path / "desired.json"
    wanted.write_text(desired(1, maps).model_dump_json(), encoding="utf-8")
    credentials = fleet_broker.write_credentials(GATEWAY, tmp_path / "credentials.json")
    port = free_port()
    return _config(tmp_path, credentials, port, **config), port, wanted, artifacts.directory


@pytest.mark.slow
async def test_killed_during_the_health_check_it_restarts_on_the_previous_slot(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    config, port, wanted, artifacts = _prepare(tmp_path, fleet_broker)
    with _gateway(config, wanted, artifacts) as first:
        async with _master(port) as client:
            await recorder.wait_for(lambda: (last := _last(recorder)) and last.phase is UpdatePhase.ACTIVE_PENDING)
            assert await _soc_register(client) > 100, "killed while the new map (SoC in 0.1 %) served"
            await _kill_at(recorder, first, UpdatePhase.ACTIVE_PENDING)
    assert first.returncode == -signal.SIGKILL
    journal = read_journal(tmp_path / "state" / "packs")
    assert journal.phase is UpdatePhase.ACTIVE_PENDING
    assert journal.committed is None
    assert journal.pending is not None
    seen = len(reports_of(recorder.raw))
    with _gateway(config):
        await recorder.wait_for(lambda: len(reports_of(recorder.raw)) > seen, timeout=20)
        reverted = reports_of(recorder.raw)[seen]
        assert reverted.phase is UpdatePhase.REVERTED
        assert reverted.reason is FailureReason.HEALTH
        assert reverted.detail == INTERRUPTED
        assert reverted.generation == 1
        assert reverted.running.pack_names == (), "it runs the previous slot and says so"
        async with _master(port) as client:
            assert await _soc_register(client) < 100, "the built-in map serves again"
    assert read_journal(tmp_path / "state" / "packs").phase is UpdatePhase.REVERTED
    assert not (tmp_path / "state" / "packs" / "slots" / "1").exists(), "the interrupted slot is gone"


@pytest.mark.slow
async def test_killed_after_the_commit_it_restarts_on_the_new_slot(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    config, port, wanted, artifacts = _prepare(tmp_path, fleet_broker)
    with _gateway(config, wanted, artifacts) as first:
        await _kill_at(recorder, first, UpdatePhase.COMMITTED)
    seen = len(reports_of(recorder.raw))
    with _gateway(config):
        await recorder.wait_for(lambda: len(reports_of(recorder.raw)) > seen, timeout=20)
        again = reports_of(recorder.raw)[seen]
        assert again.phase is UpdatePhase.COMMITTED
        assert again.running.pack_names == ("site-maps@2",)
        async with _master(port) as client:
            assert await _soc_register(client) > 100, "the committed map (SoC in 0.1 %) from the start"


@pytest.mark.slow
async def test_killed_while_waiting_for_its_preconditions_it_resumes_the_update(
    fleet_broker: FleetBroker, recorder: Recorder, tmp_path: Path
) -> None:
    # A cell alarm from the start: an inverter-affecting change waits (and, here, gives up after 4 s).
    config, port, wanted, artifacts = _prepare(tmp_path, fleet_broker, fault="cell_undervoltage", waiting_s=4.0)
    with _gateway(config, wanted, artifacts) as first:
        await _kill_at(recorder, first, UpdatePhase.WAITING)
    assert read_journal(tmp_path / "state" / "packs").phase is UpdatePhase.WAITING
    seen = len(reports_of(recorder.raw))
    with _gateway(config):
        await recorder.wait_for(lambda: (last := _last(recorder)) and last.phase is UpdatePhase.FAILED, timeout=30)
        resumed = reports_of(recorder.raw)[seen:]
        assert UpdatePhase.WAITING in [report.phase for report in resumed], "the update resumed after the kill"
        assert resumed[-1].reason is FailureReason.PRECONDITION
        assert "alarm" in resumed[-1].detail
        assert all(report.generation == 1 and report.running.pack_names == () for report in resumed)
        async with _master(port) as client:
            assert await _soc_register(client) < 100, "nothing changed: the built-in map serves"

"""Debian's mbpoll (an independent Modbus master) reads our registers over TCP and RTU."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bmsgate.inverter.modbus.settings import ModbusSettings
from bmsgate.runtime.hub import SnapshotHub

from .helpers import free_port, make_snapshot, running_sink, wait_refresh

MBPOLL = shutil.which("mbpoll")
pytestmark = pytest.mark.skipif(MBPOLL is None, reason="mbpoll is not installed (apt-get install mbpoll)")


async def mbpoll(*args: str) -> tuple[int, dict[int, int], str]:
    """Run mbpoll once (0-based references) and parse its ``[ref]: value`` lines."""
    assert MBPOLL is not None
    process = await asyncio.create_subprocess_exec(
        MBPOLL, "-0", "-1", "-t", "4", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 10)
    text = out.decode() + err.decode()
    values = {int(ref): int(value) for ref, value in re.findall(r"^\[(\d+)\]:\s+(\d+)", text, re.MULTILINE)}
    assert process.returncode is not None
    return process.returncode, values, text


async def test_mbpoll_over_tcp() -> None:
    hub = SnapshotHub()
    settings = ModbusSettings(mode="tcp", port=free_port())
    async with running_sink(settings, hub) as sink:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        code, values, text = await mbpoll(
            "-m", "tcp", "-p", str(settings.port), "-a", "1", "-r", "256", "-c", "10", "127.0.0.1"
        )
        assert code == 0, text
        assert values[256] == 50
        assert values[257] == 5280
        assert values[258] == 0x10000 - 1230
        assert values[264] == 1  # status ok
        code, _, text = await mbpoll(
            "-m", "tcp", "-p", str(settings.port), "-a", "1", "-r", "10", "-c", "2", "127.0.0.1"
        )
        assert code != 0
        assert "Illegal data address" in text


async def test_mbpoll_over_rtu(pty_pair: tuple[Path, Path]) -> None:
    server_port, client_port = pty_pair
    hub = SnapshotHub()
    settings = ModbusSettings(
        mode="rtu",
        serial_port=str(server_port),
        slave_id=21,
        register_map="byd-hvm-fronius",
    )
    async with running_sink(settings, hub) as sink:
        hub.publish(make_snapshot())
        await wait_refresh(sink)
        code, values, text = await mbpoll(
            "-m", "rtu", "-b", "9600", "-P", "none", "-a", "21", "-r", "300", "-c", "10", str(client_port)
        )
        assert code == 0, text
        assert values[300] == 3  # active
        assert values[303] == 5000  # SoC 0.01 %
        assert values[308] == 528  # 52.8 V in 0.1 V

"""Fixtures for the RS485 tests: a socat pty pair and a fake clock."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..modbus.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals from socat: (battery side, inverter side)."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    battery, inverter = tmp_path / "battery", tmp_path / "inverter"
    process = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={battery}", f"pty,raw,echo=0,link={inverter}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (battery.exists() and inverter.exists()):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.01)
        yield battery, inverter
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

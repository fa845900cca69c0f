"""Fixtures shared by every test package: a socat pty pair (Modbus RTU, Pylontech RS485, an NMEA receiver)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals from socat: (gateway side, device side)."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    server, client = tmp_path / "server", tmp_path / "client"
    process = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={server}", f"pty,raw,echo=0,link={client}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (server.exists() and client.exists()):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("socat did not create the pty pair")
            time.sleep(0.01)
        yield server, client
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

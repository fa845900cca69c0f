"""`bmsgate fleet serve` and `bmsgate fleet demo` as a user runs them: one command, nothing to configure,
the admin token shown once, SIGTERM stops everything it started."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bmsgate.mqtt.broker import find_mosquitto, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs Debian's mosquitto (CI installs it)"),
]

_COMMAND = [sys.executable, "-m", "bmsgate.app.cli.main", "fleet"]


def _mosquittos_of(data: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if "mosquitto" in line and str(data) in line]


def _read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 30.0) -> re.Match[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"{pattern!r} not printed; got {seen!r}")


def test_serve_starts_shows_the_token_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "fleet"
    arguments = [*_COMMAND, "serve", "--data", str(data), "--http", "127.0.0.1:0"]
    arguments += ["--gateway-port", str(free_port()), "--cert-port", "0", "--artifacts-port", str(free_port())]
    for start in (1, 2):
        process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = _read_until(process, r"dashboard and API at (http://\S+)/")[1]
            if start == 1:
                token = _read_until(process, r"admin token \(shown once, keep it\): (\S+)")[1]
                request = urllib.request.Request(f"{url}/api/v1/gateways", headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=5) as answer:
                    assert json.load(answer)["gateways"] == []
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=5) as answer:
                assert answer.status == 200
            assert _mosquittos_of(data)
        finally:
            process.send_signal(signal.SIGTERM)
            rest, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr[-2000:]
        assert not _mosquittos_of(data)
        if start == 2:
            assert "admin token" not in rest  # shown once, at the first start only
            assert "stopping" in rest


def test_serve_with_a_bad_config_names_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("alarms:\n  low_soc_open: high\n  no_data_factor: 0.1\nshell: rm\n")
    result = subprocess.run(
        [*_COMMAND, "serve", "--data", str(tmp_path / "d"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if str(config) in line]
    assert len(problems) == 3, result.stderr
    for key in ("alarms.low_soc_open", "alarms.no_data_factor", "shell"):
        assert any(key in line for line in problems), (key, result.stderr)


def test_fleet_demo_runs_simulated_sites_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_COMMAND, "demo", "--gateways", "2", "--interval", "1", "--duration", "6", "--http", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(
        r"fleet dashboard: http://127\.0\.0\.1:\d+/  admin token: \S+  \(2 simulated sites\)", result.stdout
    )

"""The curated public API stays sorted, importable and free of optional libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bmsgate


def test_all_is_sorted_and_importable() -> None:
    assert bmsgate.__all__ == sorted(bmsgate.__all__)
    for name in bmsgate.__all__:
        assert getattr(bmsgate, name) is not None


def test_importing_bmsgate_needs_no_optional_library() -> None:
    code = (
        "import sys, bmsgate, bmsgate.app.config;"
        "heavy = [m for m in ('bleak', 'aiomqtt', 'pymodbus', 'can', 'cantools', 'serial') if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_readme_library_example_runs_against_the_simulator() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    # The example talks to a real BMS over BLE; swap in the simulator (the comment in it says how).
    code = code.replace(
        "from bmsgate.transports.ble import BleTransport", "from bmsgate.transports.simulator import SimulatorTransport"
    )
    code = code.replace('BleTransport(jbd, "A4:C1:37:12:34:56")', "SimulatorTransport(jbd)")
    assert "SimulatorTransport(jbd)" in code
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["protocol"] == "jbd"

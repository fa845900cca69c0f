"""The command line: output, JSON, clear errors and exit codes (run in-process and as a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from tests.protocols.test_jbd import CAPTURE_4S_BASIC, CAPTURE_4S_CELLS


def test_read_simulated_battery_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--simulate", "jbd", "--json", "--cells", "8", "--id", "shed"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["battery_id"] == "shed"
    assert data["protocol"] == "jbd"
    assert len(data["cell_voltages"]) == 8


def test_read_simulated_battery_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--simulate", "jbd", "--cells", "4"]) == 0
    out = capsys.readouterr().out
    assert "State of charge" in out
    assert "Cell min / max" in out
    assert " 4 " in out


def test_decode_hex_with_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(CAPTURE_4S_BASIC[i : i + 2] for i in range(0, len(CAPTURE_4S_BASIC), 2))
    assert main(["decode", "--protocol", "jbd", spaced, CAPTURE_4S_CELLS]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["voltage"] == 15.6
    assert data["cell_voltages"] == [3.909, 3.901, 3.895, 3.901]


def test_decode_bad_frame_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--protocol", "jbd", CAPTURE_4S_BASIC[:-4] + "0077"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bmsgate: error: frame 1: checksum mismatch")
    assert "Traceback" not in err


def test_unknown_protocol_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--protocol", "nope", "DD"]) == 2
    assert "no protocol named 'nope'; available: ant," in capsys.readouterr().err


def test_decode_without_protocol_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["decode", "DD"])
    assert info.value.code == 2


def test_protocol_file_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = Path(__file__).parents[2] / "src/bmsgate/data/protocols/jbd.yaml"
    copy = tmp_path / "mine.yaml"
    copy.write_text(source.read_text())
    assert main(["protocols", "check", str(copy)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["decode", "--protocol-file", str(copy), CAPTURE_4S_CELLS]) == 0
    assert json.loads(capsys.readouterr().out)["cell_count"] == 4
    copy.write_text("name: Bad Name\n")
    assert main(["protocols", "check", str(copy)]) == 2
    assert "mine.yaml" in capsys.readouterr().err


def test_protocols_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "list", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert "jbd" in names


def test_replay_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        {"format": "bmsgate-replay", "version": 1, "protocol": "jbd", "source": "test"},
        {"t": 0.0, "dir": "tx", "data": "dda50300fffd77"},
        {"t": 0.05, "dir": "rx", "data": CAPTURE_4S_BASIC[:40]},
        {"t": 0.06, "dir": "rx", "data": CAPTURE_4S_BASIC[40:]},
        {"t": 0.1, "dir": "tx", "data": "dda50400fffc77"},
        {"t": 0.15, "dir": "rx", "data": CAPTURE_4S_CELLS},
    ]
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert main(["read", "--replay", str(path), "--json", "--timeout", "0.2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["voltage"] == 15.6
    assert data["cell_count"] == 4


def test_console_script_runs_as_a_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bmsgate.app.cli.main", "read", "--simulate", "jbd", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["protocol"] == "jbd"

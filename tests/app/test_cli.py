"""The command line: output, JSON, clear errors and exit codes (run in-process and as a real process)."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from tests.protocols.family_frames import X123SMART
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
    # A frame typed on the command line that is not intact is bad input (exit 2), like bad hex.
    assert main(["decode", "--protocol", "jbd", CAPTURE_4S_BASIC[:-4] + "0077"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bmsgate: error: frames: frame 1: checksum mismatch")
    assert "Traceback" not in err


def test_unknown_protocol_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--protocol", "nope", "DD"]) == 2
    error = capsys.readouterr().err
    assert "no protocol named 'nope'; available: abc, allpowers, ant," in error


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


def test_bad_hex_in_decode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--protocol", "jbd", CAPTURE_4S_BASIC, "DD04XYZ"]) == 2
    assert capsys.readouterr().err == "bmsgate: error: frame 2: 'DD04XYZ' is not hex: 'X' is not a hex digit\n"


def test_decode_with_a_missing_reply_decodes_the_rest_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--protocol", "jbd", CAPTURE_4S_BASIC]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["voltage"] == 15.6
    assert data["cell_voltages"] == []
    assert captured.err == (
        "bmsgate: warning: no reply to 'cell_voltages' (0x04) among the frames; "
        "what it carries is missing from the snapshot\n"
    )
    assert main(["decode", "--protocol", "jbd", CAPTURE_4S_BASIC, CAPTURE_4S_CELLS]) == 0
    assert capsys.readouterr().err == ""


def test_simulating_more_cells_than_the_protocol_carries_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--simulate", "renogy", "--cells", "24", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "bmsgate: error: --cells: protocol 'renogy' carries at most 16 cell voltages; cannot simulate 24\n"
    )
    assert main(["read", "--simulate", "renogy", "--cells", "16", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["cell_voltages"]) == 16
    assert main(["read", "--simulate", "jbd", "--cells", "24", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["cell_voltages"]) == 24


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["protocols"], "jbd "),
        (["config"], "check"),
        (["catalog"], "protocol"),
        (["capture"], "analyze"),
        (["inverters"], "pylon"),
    ],
)
def test_a_command_group_without_an_action_answers_and_exits_0(
    capsys: pytest.CaptureFixture[str], command: list[str], expected: str
) -> None:
    assert main(command) == 0
    captured = capsys.readouterr()
    assert expected in captured.out
    assert captured.err == ""


def test_a_bad_mqtt_url_has_no_pydantic_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--mqtt", "http://x", "--no-modbus", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("bmsgate: error: --mqtt: url: scheme must be mqtt:// or mqtts://, not 'http'\n")
    assert "Value error" not in err


README = Path(__file__).parents[2] / "README.md"
SNAPSHOT_DOC = Path(__file__).parents[2] / "docs/snapshot-json.md"


def _decode_example(path: Path) -> tuple[list[str], dict[str, object]]:
    """The first ``bmsgate decode`` command of `path` and the JSON block printed after it."""
    text = path.read_text()
    match = re.search(r"```sh\n(bmsgate decode .*?)```\s.*?```json\n(.*?)```", text, re.DOTALL)
    assert match, f"no decode example in {path.name}"
    command = shlex.split(match[1].replace("\\\n", " "))
    return command[1:], json.loads(match[2])


def _assert_subset(shown: object, actual: object, where: str = "") -> None:
    if isinstance(shown, dict):
        assert isinstance(actual, dict), where
        for key, value in shown.items():
            assert key in actual, f"{where}.{key}"
            _assert_subset(value, actual[key], f"{where}.{key}")
    else:
        assert shown == actual, where


@pytest.mark.parametrize("doc", [README, SNAPSHOT_DOC], ids=lambda path: path.name)
def test_the_documented_decode_example_runs_and_prints_what_the_doc_shows(
    capsys: pytest.CaptureFixture[str], doc: Path
) -> None:
    argv, shown = _decode_example(doc)
    assert "..." not in " ".join(argv)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    _assert_subset(shown, json.loads(captured.out))


def test_run_names_a_busy_modbus_port_its_holder_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(
            "state_dir: " + str(tmp_path / "state") + "\n"
            "batteries: [{id: a, protocol: jbd, transport: {type: simulator}}]\n"
            f"outputs: {{console: {{enabled: false}}, modbus: {{mode: tcp, host: 127.0.0.1, port: {port}}}}}\n"
        )
        assert main(["run", "-c", str(config), "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bmsgate: error: {config}: outputs.modbus.port: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in err.lower()
    if sys.platform == "linux":
        assert f"(by pid {os.getpid()} " in err


def _x123smart_recording(tmp_path: Path, pin: str) -> Path:
    """A 123\\SmartBMS conversation as recorded: its keep-alive, the login with the owner's PIN, the stream."""
    stream = [frame for name in ("cells", "pack", "energy", "history") for frame in X123SMART.replies[name]]
    records: list[tuple[str, bytes]] = [("tx", b"$"), ("tx", f"PW{pin}!\r".encode()), ("rx", b"OK\r")]
    records += [("tx", b"E!\r"), ("rx", b"OK\r"), *(("rx", line) for line in stream)]
    records += [item for _ in range(20) for item in (("tx", b"$"), *(("rx", line) for line in stream))]
    lines = [{"format": "bmsgate-replay", "version": 1, "protocol": "x123smart", "source": "test"}]
    lines += [{"t": 0.01 * index, "dir": way, "data": data.hex()} for index, (way, data) in enumerate(records)]
    path = tmp_path / "x123smart.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_a_replay_answers_the_login_whatever_the_recorded_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the CLI sent the simulator's secret, which never matched the recorded login: no OK, no snapshot.
    path = _x123smart_recording(tmp_path, pin="9876")
    assert main(["read", "--replay", str(path), "--json", "--timeout", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["voltage"] is not None
    monkeypatch.setenv("BOAT_PIN", "")
    assert main(["read", "--replay", str(path), "--secret-env", "BOAT_PIN"]) == 2
    assert "BOAT_PIN" in capsys.readouterr().err
    assert main(["read", "--replay", str(path), "--secret-env", "NO_SUCH_VARIABLE_SET"]) == 2
    assert "NO_SUCH_VARIABLE_SET" in capsys.readouterr().err

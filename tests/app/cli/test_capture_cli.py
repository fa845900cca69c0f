"""`bmsgate capture analyze` through the real CLI: report, export → replay, skeleton → definition check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmsgate.app.cli.main import main
from tests.capture.test_analysis import jbd_capture


def test_capture_analyze_export_replay_and_skeleton(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "btsnoop_hci.log"
    capture.write_bytes(jbd_capture())
    export = tmp_path / "replay.jsonl"
    skeleton = tmp_path / "mine.yaml"

    assert (
        main(["capture", "analyze", str(capture), "--json", "--export", str(export), "--skeleton", str(skeleton)]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert "jbd" in json.dumps(report)

    # The export replays through the normal read path, with the protocol taken from the file.
    assert main(["read", "--replay", str(export), "--json", "--timeout", "0.3"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["voltage"] == pytest.approx(66.23)
    assert snapshot["cell_count"] == 17

    # The skeleton is a valid definition the user can start from.
    assert main(["protocols", "check", str(skeleton)]) == 0


def test_capture_analyze_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "analyze", str(tmp_path / "nope.log")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bmsgate: error: ")
    assert "nope.log" in err
    assert "cannot read the file" in err

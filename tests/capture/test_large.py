"""Big and damaged captures: bounded memory and time, progress on a terminal, `--limit`.

Memory is measured as the peak RSS of a child process (through a wrapper process, so children other
tests started do not count); the bounds are several times what the streaming report needs and far below
what building the whole JSON document (and rich's rendering of it) took.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rich.console import Console

from bmsgate.capture.command import run_capture_analyze
from bmsgate.capture.packets import MAX_EMPTY_RECORDS
from tests.capture.test_analysis import jbd_capture

# Runs `bmsgate capture analyze ARGS...` and prints the child's exit code, peak RSS (MB) and stderr.
_MEASURE = textwrap.dedent(
    """
    import json, resource, subprocess, sys
    child = subprocess.run(
        [sys.executable, "-m", "bmsgate", "capture", "analyze", *sys.argv[1:]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"code": child.returncode, "rss_mb": peak_kb / 1024, "stderr": child.stderr}))
    """
)


def _measure(*args: str, timeout: float) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, check=True, timeout=timeout
    )
    measured: dict[str, object] = json.loads(result.stdout)
    return measured


def _console(*, terminal: bool = False) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None, force_terminal=terminal), buffer


def test_json_report_of_a_2mb_capture_stays_small(tmp_path: Path) -> None:
    capture = tmp_path / "big.log"
    capture.write_bytes(jbd_capture(polls=5800))
    assert capture.stat().st_size > 2_000_000
    measured = _measure(str(capture), "--json", timeout=300)
    assert measured["code"] == 0, measured["stderr"]
    # Streaming needs ~60 MB here (interpreter and catalog included); the whole-document path took ~1 GB.
    assert isinstance(measured["rss_mb"], float)
    assert measured["rss_mb"] < 250


def test_zero_filled_btsnoop_is_refused_quickly_without_reading_it_all(tmp_path: Path) -> None:
    capture = tmp_path / "zeros.log"
    with capture.open("wb") as file:
        file.write(b"btsnoop\x00" + struct.pack(">II", 1, 1002))
        file.truncate(16 + 200_000_000)  # sparse: costs no disk space
    began = time.monotonic()
    measured = _measure(str(capture), "--json", timeout=120)
    elapsed = time.monotonic() - began
    assert measured["code"] == 1
    stderr = str(measured["stderr"])
    assert stderr.count("\n") == 1
    assert f"{MAX_EMPTY_RECORDS} empty records in a row from byte offset 16" in stderr
    assert "Traceback" not in stderr
    assert isinstance(measured["rss_mb"], float)
    assert measured["rss_mb"] < 150  # the file is 200 MB
    assert elapsed < 60  # seconds of interpreter start-up on a loaded machine; minutes before


def test_limit_shortens_the_lists_and_keeps_the_totals(tmp_path: Path) -> None:
    capture = tmp_path / "capture.log"
    capture.write_bytes(jbd_capture(polls=20))
    out, buffer = _console()
    assert run_capture_analyze(str(capture), as_json=True, export=None, skeleton=None, console=out, limit=3) == 0
    report = json.loads(buffer.getvalue())
    assert len(report["timeline"]) == 3
    assert report["event_count"] > 3 * 20
    assert len(report["exchanges"]) == 3
    assert report["exchange_count"] == 40
    match = report["protocol_matches"][0]
    assert len(match["polls"]) == 3
    assert match["poll_count"] == 20
    assert match["decoded"] == 20


def test_streamed_json_equals_the_report_dict(tmp_path: Path) -> None:
    from bmsgate.capture.analysis import analyze_capture

    capture = tmp_path / "capture.log"
    capture.write_bytes(jbd_capture(polls=3))
    out, buffer = _console()
    assert run_capture_analyze(str(capture), as_json=True, export=None, skeleton=None, console=out) == 0
    streamed = json.loads(buffer.getvalue())
    assert streamed.pop("event_count") == len(streamed["timeline"])
    assert streamed.pop("exchange_count") == len(streamed["exchanges"])
    for match in streamed["protocol_matches"]:
        assert match.pop("poll_count") == len(match["polls"])
    assert streamed == analyze_capture(capture.read_bytes(), str(capture)).to_dict()


def test_progress_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    capture = tmp_path / "capture.log"
    capture.write_bytes(jbd_capture(polls=2))
    for terminal in (True, False):
        out, _ = _console()
        errors, buffer = _console(terminal=terminal)
        code = run_capture_analyze(
            str(capture), as_json=True, export=None, skeleton=None, console=out, error_console=errors
        )
        assert code == 0
        assert ("matching protocols" in buffer.getvalue()) is terminal

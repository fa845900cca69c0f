"""The CLI entry point and the skeleton definition."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from bmsgate.capture.analysis import analyze_capture
from bmsgate.capture.command import run_capture_analyze
from bmsgate.capture.replayfile import read_replay
from bmsgate.capture.skeleton import guess_framing, skeleton_definition
from bmsgate.protocols import compile_definition, definition_from_text
from tests.capture.capturebuilders import btsnoop_h4
from tests.capture.test_analysis import BASIC_17S, CELLS_17S, jbd_capture


def console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None), buffer


def test_text_report_export_and_skeleton(tmp_path: Path) -> None:
    capture = tmp_path / "btsnoop_hci.log"
    capture.write_bytes(jbd_capture())
    out, buffer = console()
    code = run_capture_analyze(
        str(capture),
        as_json=False,
        export=str(tmp_path / "poll.jsonl"),
        skeleton=str(tmp_path / "new.yaml"),
        console=out,
    )
    text = buffer.getvalue()
    assert code == 0
    assert "jbd on hci:0x0040" in text
    assert "66.23" in text
    assert read_replay(tmp_path / "poll.jsonl").protocol == "jbd"
    definition = definition_from_text((tmp_path / "new.yaml").read_text(encoding="utf-8"))
    assert definition.framing.checksum is not None
    assert definition.framing.checksum.algorithm == "sum16_complement"


def test_json_report(tmp_path: Path) -> None:
    capture = tmp_path / "capture.log"
    capture.write_bytes(jbd_capture(polls=1))
    out, buffer = console()
    assert run_capture_analyze(str(capture), as_json=True, export=None, skeleton=None, console=out) == 0
    assert json.loads(buffer.getvalue())["protocol"] == "jbd"


def test_errors_become_a_message_and_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.log"
    bad.write_bytes(b"not a capture at all")
    out, buffer = console()
    assert run_capture_analyze(str(bad), as_json=False, export=None, skeleton=None, console=out) == 1
    assert "not a btsnoop, pcap or pcapng file" in buffer.getvalue()
    assert "Traceback" not in buffer.getvalue()
    out, buffer = console()
    assert run_capture_analyze(str(tmp_path / "missing"), as_json=False, export=None, skeleton=None, console=out) == 1
    assert "cannot read the file" in buffer.getvalue()
    out, buffer = console()
    capture = tmp_path / "ok.log"
    capture.write_bytes(jbd_capture(polls=1))
    code = run_capture_analyze(
        str(capture), as_json=False, export=str(tmp_path / "no/dir/x.jsonl"), skeleton=None, console=out
    )
    assert code == 1
    assert "cannot write" in buffer.getvalue()


def test_truncated_capture_still_reports_with_a_warning(tmp_path: Path) -> None:
    capture = tmp_path / "cut.log"
    capture.write_bytes(jbd_capture(polls=1)[:-7])
    out, buffer = console()
    assert run_capture_analyze(str(capture), as_json=False, export=None, skeleton=None, console=out) == 0
    assert "warning:" in buffer.getvalue()
    assert "truncated record" in buffer.getvalue()


def test_skeleton_compiles_and_decodes_its_own_frames() -> None:
    report = analyze_capture(jbd_capture(), "jbd.log", [])
    compiled = compile_definition(definition_from_text(skeleton_definition(report)))
    assembler = compiled.new_assembler()
    frames = assembler.feed(BASIC_17S + CELLS_17S)
    assert [frame.key for frame in frames] == [0x03, 0x04]


def test_framing_guess_for_modbus_style_frames() -> None:
    def crc(data: bytes) -> bytes:
        value = 0xFFFF
        for byte in data:
            value ^= byte
            for _ in range(8):
                value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
        return value.to_bytes(2, "little")

    bodies = [bytes.fromhex("01030400010002"), bytes.fromhex("0103020005"), bytes.fromhex("010306000100020003")]
    guess = guess_framing([body + crc(body) for body in bodies])
    assert guess.start == b"\x01\x03"
    assert guess.checksum == ("crc16_modbus", 0, "little")
    assert guess.length_offset == 2
    assert guess.length_add == 5


def test_skeleton_without_discovery_or_traffic() -> None:
    text = skeleton_definition(analyze_capture(jbd_capture(polls=1, discovery=False), "x", []))
    assert "# gatt:" in text
    empty = skeleton_definition(analyze_capture(btsnoop_h4([]), "x", []))
    assert "no writes seen" in empty


def test_last_decoded_values_show_their_units(tmp_path: Path) -> None:
    capture = tmp_path / "capture.log"
    capture.write_bytes(jbd_capture(polls=1))
    out, buffer = console()
    assert run_capture_analyze(str(capture), as_json=False, export=None, skeleton=None, console=out) == 0
    rows = {
        cells[0]: cells[1]
        for line in buffer.getvalue().splitlines()
        if len(cells := [cell.strip() for cell in line.strip("│┃ ").split("│")]) == 2
    }
    assert rows["voltage"] == "66.23 V"
    assert rows["current"] == "-20.12 A"
    assert rows["soc"] == "87.0%"
    assert rows["remaining_capacity"] == "34.93 Ah"
    assert rows["full_capacity"] == "40.0 Ah"
    assert rows["cell_min"] == "3.783 V"
    assert rows["cell_max"] == "3.791 V"
    assert rows["temperatures"] == "23.7, 25.4, 23.5, 23.6 °C"
    assert rows["cycles"] == "2"
